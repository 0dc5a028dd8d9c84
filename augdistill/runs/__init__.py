"""Run directories: atomic files, their layout, and the jobs (distill, evaluate, compare) run on them."""

from augdistill.runs.jobs import PROTOCOLS, distill_run, draw_run, evaluate_run, load_run_dataset
from augdistill.runs.layout import DistilledSet, load_config, load_distilled, save_distilled

__all__ = ["PROTOCOLS", "distill_run", "draw_run", "evaluate_run", "load_run_dataset", "DistilledSet", "load_config",
           "load_distilled", "save_distilled"]
