SELECT kind, pending, waiting_for_a_target, oldest_s FROM qlarius_pending_work
