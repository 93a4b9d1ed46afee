-- Wake the workers' drains at commit ('sync' or 'reconcile'): a scope job that held a target
-- leaves work for it that only becomes takeable when it commits.
SELECT pg_notify('qlarius_wakeup', %(kind)s)
