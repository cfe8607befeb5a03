"""`python -m signlab …` and `torchrun -m signlab train …` enter here."""

from signlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
