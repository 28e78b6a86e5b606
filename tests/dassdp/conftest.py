"""dassdp tests use tiny tensors: one intra-op thread (the shared fixture) is faster on a 2-core machine."""
from common_fixtures import one_thread  # noqa: F401 (autouse fixture)
