import sys

from neuronrank.cli import main

sys.exit(main())
