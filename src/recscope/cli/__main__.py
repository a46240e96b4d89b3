"""``python -m recscope.cli`` runs the recscope command."""

from recscope.cli import main

main()
