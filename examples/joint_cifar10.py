"""Joint distill+augment on CIFAR-10 (GPU-sized defaults): `--policy none | fixed (DSA) | learn`.

    python examples/joint_cifar10.py --data-root /path/to/cifar --device cuda

The inner network is ConvNet-3 (width 128, instance norm, the field's standard); on a CPU pass
smaller settings, e.g. ``--iterations 50 --ipc 1``.
"""

from _joint import run

if __name__ == "__main__":
    run(__doc__, dataset="cifar10", ipc=10, iterations=2000,
        ops="hflip,rotate,translate-x,translate-y,scale,brightness,contrast,saturation",
        model={"name": "convnet", "width": 128, "norm": "instance"}, num_inits=4, device="cuda",
        out="runs/joint-cifar10")
