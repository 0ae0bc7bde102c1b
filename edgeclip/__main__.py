"""`python -m edgeclip` runs the edgeclip command."""
import sys

from edgeclip.cli import main

sys.exit(main())
