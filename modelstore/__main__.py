import sys

from sparsity.logs import quiet_tensorflow

quiet_tensorflow()
from modelstore.cli import main  # noqa: E402

sys.exit(main())
