"""Actors built from a git repository through the official Python apify-client: a local repository
made by the test (a branch and a subdirectory), created as a GIT_REPO version, built and run."""

import os
import subprocess
import tempfile

from conftest import finished, status_of, unique


def git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
         "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True,
        env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=cwd),
    )


def write_actor(folder, what):
    os.makedirs(os.path.join(folder, ".actor"), exist_ok=True)
    with open(os.path.join(folder, ".actor", "actor.json"), "w") as f:
        f.write('{"actorSpecification": 1, "startCommand": "sh main.sh"}')
    with open(os.path.join(folder, "main.sh"), "w") as f:
        f.write(f"echo source={what}\n")


def test_git_repo_actor_builds_and_runs(client):
    with tempfile.TemporaryDirectory(prefix="troupe-git-") as repo:
        git(repo, "init", "-q")
        write_actor(repo, "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "one")
        git(repo, "checkout", "-q", "-b", "feature")
        write_actor(os.path.join(repo, "actors", "py"), "feature-sub")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "two")
        git(repo, "checkout", "-q", "main")

        actor = client.actors().create(
            name=unique("py-git"),
            versions=[{
                "versionNumber": "0.1",
                "sourceType": "GIT_REPO",
                "gitRepoUrl": f"file://{repo}#feature:actors/py",
            }],
            default_run_memory_mbytes=128,
        )
        version = client.actor(actor.id).version("0.1").get()
        assert getattr(version.source_type, "value", version.source_type) == "GIT_REPO"
        assert version.git_repo_url == f"file://{repo}#feature:actors/py"
        build = client.actor(actor.id).build(version_number="0.1", wait_for_finish=60)
        build = client.build(build.id).wait_for_finish()
        log = client.build(build.id).log().get()
        assert status_of(build) == "SUCCEEDED", log
        assert "Checked out commit" in log

        run = finished(client, client.actor(actor.id).start())
        assert status_of(run) == "SUCCEEDED"
        assert "source=feature-sub" in client.run(run.id).log().get()
        # The run names the branch its build came from.
        assert client.run(run.id).get().git_branch_name == "feature"

        # A branch that does not exist: the build fails with git's message.
        client.actor(actor.id).version("0.1").update(git_repo_url=f"file://{repo}#nope")
        build = client.actor(actor.id).build(version_number="0.1", wait_for_finish=60)
        build = client.build(build.id).wait_for_finish()
        assert status_of(build) == "FAILED"
        assert "Build failed: git fetch failed" in client.build(build.id).log().get()
