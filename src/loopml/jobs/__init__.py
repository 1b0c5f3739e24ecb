"""Running jobs, whatever their kind: the worker entry point (``worker``), the executors that
start and watch workers (``executor``: the protocol; ``local``: subprocesses on this host) and
the capture of a worker's output into the job's logs (``logsink``).

The kinds themselves (kind → submit → runner → parameters) are one table in
``loopml.core.jobkinds``, pure data so the API and CLI read it; runners are named there by
string, so this package imports no domain package and no domain package imports another
through it. The control plane's loop (``controlplane.loop``) drives an ``Executor``.
"""
