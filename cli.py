"""Thin entry point: `python cli.py predict --config configs/demo.yaml` (same as the `dyto` command)."""

from dyto.cli import main

if __name__ == "__main__":
    main()
