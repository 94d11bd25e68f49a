"""taskhook: receive, keep and reconcile callbacks from asynchronous generation APIs."""

__version__ = "0.1.0"
