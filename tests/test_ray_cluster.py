"""The text actor pool on a cluster with (fake) GPU nodes: an actor's node removed mid-run has
its batches resubmitted to an actor on another node, and the output equals a local run.

``ray.cluster_utils.Cluster`` starts a head and two nodes that each claim one GPU; on this
machine there is no CUDA, so the actors (``num_gpus=1``) see ``CUDA_VISIBLE_DEVICES`` set and
run on the CPU, which is what the test needs: the scheduling and the failure handling.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import assert_same_output, run_args, run_cli, start_cli

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    gpu_nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, gpu_nodes
    finally:
        c.shutdown()


def test_actor_node_removed_mid_run_resubmits_its_batches(cluster, corpus, tiny_bert, tmp_path):
    c, gpu_nodes = cluster
    ref = tmp_path / "local"
    assert run_cli(*run_args(corpus, ref, tiny_bert)).returncode == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    out = tmp_path / "ray"
    args = [
        *run_args(corpus, out, tiny_bert, "--executor", "ray"), "--ray_address", c.address,
        "--ray_gpus_per_actor", "1", "--stages", "text",
    ]  # fmt: skip
    import os

    os.environ["AMTPREP_RAY_ACTOR_NOTE"] = str(notes)
    # each text batch waits 1 s on its actor: the 4 batches outlast the removal below, so some
    # are in flight on the removed node whatever this machine's speed
    os.environ["AMTPREP_RAY_ACTOR_DELAY"] = "1.0"
    try:
        proc = start_cli(args, delay=1.0)
        deadline = time.time() + 120
        while not list(notes.glob("*.node")) and time.time() < deadline:
            time.sleep(0.2)
        node_id = next(notes.glob("*.node")).read_text()
        victim = next(n for n in gpu_nodes if n.node_id == node_id)
        time.sleep(1.5)  # a batch committed or running, more queued on that actor
        c.remove_node(victim, allow_graceful=False)
        _, err = proc.communicate(timeout=300)
    finally:
        del os.environ["AMTPREP_RAY_ACTOR_NOTE"]
        del os.environ["AMTPREP_RAY_ACTOR_DELAY"]
    assert proc.returncode == 0, err[-3000:]
    assert "lost with its worker" in err and "resubmitted" in err
    assert len(list(notes.glob("*.node"))) >= 2  # a new actor, on the other GPU node
    r = run_cli(*args[:-2], "--stages", "midi,merge")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_output(ref, out)
