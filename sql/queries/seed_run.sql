SELECT pg_temp.qlarius_seed(%(me_files)s, %(parents)s, %(targets)s, %(campaigns_per_target)s,
                            %(populate)s, %(null_share)s, %(ad_event_share)s, %(seed)s) AS counts
