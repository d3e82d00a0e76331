"""python -m deploy: the mediai command."""

from deploy.cli import main

main()
