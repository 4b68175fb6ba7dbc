"""`python -m ernie_deploy` runs the CLI."""

from ernie_deploy.cli import main

main()
