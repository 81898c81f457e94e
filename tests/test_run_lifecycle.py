"""Run lifecycle faults of issue [12]: a resume that would train nothing is refused before anything is built."""
import os

from conftest import run_cli, tiny_teacher_options


def test_auto_resume_beyond_total_iter_is_a_one_line_usage_error(tmp_path, paired_folders):
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'run', total_iter=4)
    first = run_cli(['train', '-opt', opt_path, '--force_yml', 'logger:save_checkpoint_freq=2'], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / 'experiments' / 'run'
    before = sorted(os.listdir(folder))
    state = folder / 'training_states' / '4.state'

    again = run_cli(['train', '-opt', opt_path, '--auto_resume', '--force_yml', 'train:total_iter=2'], cwd=tmp_path)
    assert again.returncode == 2, again.stderr[-3000:]
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('basicsr train: error: --auto_resume: '), lines
    assert f'{state} is at iteration 4, beyond train:total_iter 2' in lines[0]
    assert sorted(os.listdir(folder)) == before  # no new log, no option copy: nothing was built


def test_resume_removes_only_this_runs_stale_temporary_files(tmp_path, paired_folders):
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'run', total_iter=2)
    first = run_cli(['train', '-opt', opt_path, '--force_yml', 'logger:save_checkpoint_freq=2'], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / 'experiments' / 'run'
    stale = [folder / 'training_states' / '.4.state.k3_x9abq.tmp', folder / 'models' / '.net_g_4.pth.a1b2c3d4.tmp']
    kept = [folder / 'models' / 'notes.tmp', folder / 'models' / '.net_g_4.pth.tmp', tmp_path / 'experiments' /
            '.other.pth.a1b2c3d4.tmp', tmp_path / 'experiments' / 'other' / '.x.pth.a1b2c3d4.tmp']
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'partial')
    again = run_cli(['train', '-opt', opt_path, '--auto_resume', '--force_yml', 'train:total_iter=4',
                     'logger:save_checkpoint_freq=2'], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert f'Removed {stale[0]}, left by a write that was interrupted.' in again.stdout + again.stderr
