"""``python -m cli`` (also what ``torchrun -m cli`` runs)."""

from cli.main import main

if __name__ == "__main__":
    main()
