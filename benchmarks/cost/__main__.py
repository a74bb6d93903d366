"""`python -m benchmarks.cost`: see benchmarks/cost/cli.py."""

from benchmarks.cost.cli import main

if __name__ == "__main__":
    main()
