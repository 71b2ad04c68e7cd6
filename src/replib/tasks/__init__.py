"""Training tasks, registered by name for :func:`replib.experiments.make_spec`.

Importing this package registers every built-in task.
"""

from . import acnn, compare, dense, irda, l0, lottery, proxns  # noqa: F401
