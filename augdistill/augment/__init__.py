"""Learnable differentiable augmentation: ops, policies, JSON policies and export.

Sample, then apply::

    policy = build_policy(["rotate", "translate-x"], image_size=(8, 8))
    params = policy.sample(x.shape[0], generator=g, device=x.device)  # noise only
    y = policy(x, params=params)  # differentiable w.r.t. x and policy.parameters()
    pipeline = policy.to_torchvision()  # or python_snippet(policy) for pasteable code

    per_class = ClassRangesPolicy(policy, class_names)  # one range per op and class
    y = per_class(x, params=params, labels=labels)

This package depends on nothing above it (no distillation code).
"""

from augdistill.augment.class_conditional import ClassConditional
from augdistill.augment.class_ranges import ClassRangesPolicy
from augdistill.augment.export import python_snippet, to_kornia, to_torchvision
from augdistill.augment.gates import bernoulli_gate, gumbel_choice, straight_through
from augdistill.augment.learn import (POLICY_PARAMETER_KINDS, AugerinoConfig, AugerinoResult, InstanceRanges,
                                      InstaAugConfig, learn_only, policy_param_groups, policy_spread, train_augerino,
                                      train_instaaug, tta_predict)
from augdistill.augment.ops import OP_NAMES, OPS, AugmentOp, OpSpec
from augdistill.augment.policy import COMPOSITIONS, AugmentParams, Policy, build_policy
from augdistill.augment.presets import dsa_policy, identity_policy
from augdistill.augment.serialization import SCHEMA_VERSION, load_policy, policy_from_dict

__all__ = [
    "Policy", "ClassRangesPolicy", "ClassConditional", "AugmentOp", "AugmentParams", "OpSpec", "OPS", "OP_NAMES",
    "COMPOSITIONS", "SCHEMA_VERSION",
    "build_policy", "load_policy", "policy_from_dict", "dsa_policy", "identity_policy",
    "to_torchvision", "to_kornia", "python_snippet", "bernoulli_gate", "gumbel_choice", "straight_through",
    "AugerinoConfig", "AugerinoResult", "InstaAugConfig", "InstanceRanges", "POLICY_PARAMETER_KINDS", "learn_only",
    "policy_param_groups", "policy_spread", "train_augerino", "train_instaaug", "tta_predict",
]
