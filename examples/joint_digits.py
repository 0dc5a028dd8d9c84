"""Joint distill+augment on digits: `--policy none | fixed (DSA) | learn` at the same budget.

    python examples/joint_digits.py            # ~4 minutes on 2 CPU cores

Prints a Markdown table of replay and standard-protocol accuracy (mean ± std over 5 nets).
"""

from _joint import run

if __name__ == "__main__":
    run(__doc__, dataset="digits", ipc=10, iterations=300, ops="rotate,translate-x,translate-y,scale",
        model={"name": "mlp"}, standard_epochs=100, out="runs/joint-digits")
