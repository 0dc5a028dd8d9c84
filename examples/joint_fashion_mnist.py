"""Joint distill+augment on Fashion-MNIST, 10 images per class: `--policy none | fixed (DSA) | learn`.

    apt-get install -y dataset-fashion-mnist
    python examples/joint_fashion_mnist.py     # ~40 minutes on 2 CPU cores; minutes with --device cuda

Prints a Markdown table of replay and standard-protocol accuracy (mean ± std over 5 nets).
"""

from _joint import run

if __name__ == "__main__":
    run(__doc__, dataset="fashion-mnist", ipc=10, iterations=150,
        ops="hflip,rotate,translate-x,translate-y,scale", model={"name": "mlp", "width": 256},
        out="runs/joint-fashion-mnist")
