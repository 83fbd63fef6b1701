

def test_stale_temporaries_are_removed_and_fresh_ones_and_real_files_kept(tmp_path):
    import os
    import time

    from tltk.fileio import remove_stale_temporaries, temporary_name

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    stale_file = temporary_name(tmp_path / "model.tlt")  # .model.tlt.<hex>.tmp
    stale_dir = temporary_name(ckpt / "cycle-0002", ".partial")
    open(stale_file, "wb").close()
    os.makedirs(os.path.join(stale_dir, "inner"))
    keep = [tmp_path / "model.tlt", tmp_path / ".tltk.lock", ckpt / "cycle-0001", tmp_path / ".notes.tmp"]
    for path in keep:
        path.write_text("x")
    past = time.time() - 60
    for path in (stale_file, stale_dir):
        os.utime(path, (past, past))
    fresh = temporary_name(tmp_path / "status.json")  # written after the lock was taken: kept
    open(fresh, "wb").close()
    removed = remove_stale_temporaries(tmp_path, older_than=time.time() - 1)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert not os.path.exists(stale_file) and not os.path.exists(stale_dir)
    assert all(path.exists() for path in keep) and os.path.exists(fresh)
