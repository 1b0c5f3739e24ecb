"""The control plane: reconcile loops over the metadata store (jobs, endpoints)."""

from loopml.controlplane.loop import ControlLoop

__all__ = ["ControlLoop"]
