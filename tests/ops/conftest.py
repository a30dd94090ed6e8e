from tests.ops.scratch import scratch_db

__all__ = ["scratch_db"]
