"""genedge: plan cost-effective text-to-image services on edge GPUs.

The package has three stages, each a subpackage: ``genedge.profiler`` measures
pipelines, ``genedge.calibrate`` turns measurements into calibration tables,
and ``genedge.optimizer`` plans deployments from a table. ``genedge.cli`` is
the command-line layer that composes them.
"""

__version__ = "0.1.0"
