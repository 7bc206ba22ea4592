"""runwire: run flows and narrate every run as a durable gRPC event stream."""

import os

# gRPC core's fork handlers (pthread_atfork) are for processes that fork and use
# gRPC in the child. runwire forks only to exec (shell nodes, `--workers`,
# pg_ctl), and with the handlers on, a child forked while other threads were
# inside gRPC now and then died of SIGSEGV before its exec (seen in `make
# faults`: "skipping fork() handlers", then "Fatal Python error: Segmentation
# fault"). Off unless the environment says otherwise; set before gRPC loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
