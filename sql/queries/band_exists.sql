SELECT id FROM target_bands WHERE id = %(band_id)s
