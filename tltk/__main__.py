"""``python -m tltk`` runs the command-line interface."""

from tltk.cli.app import main

if __name__ == "__main__":
    main()
