"""``python -m cli`` (``torchrun --no-python diffconv`` is safer than ``-m cli``, which a
project's own ``cli`` package in the current folder would shadow)."""

from cli.main import main

if __name__ == "__main__":
    main()
