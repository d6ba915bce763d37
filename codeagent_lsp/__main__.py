import sys

from codeagent_lsp.cli import main

sys.exit(main())
