"""`python -m exaprov` runs the command-line interface."""

from exaprov.cli import main

main()
