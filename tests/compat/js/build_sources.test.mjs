// Actors built from a git repository through the official JS apify-client: a local repository
// made by the test (a tag and a subdirectory), created as a GIT_REPO version, built and run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { finished, startServer, unique } from './harness.mjs';

let server;
let client;
let repo;

const git = (...args) => execFileSync('git', [
    '-c', 'user.name=Test', '-c', 'user.email=test@example.com', '-c', 'init.defaultBranch=main',
    '-c', 'commit.gpgsign=false', '-c', 'tag.gpgsign=false', ...args,
], { cwd: repo, env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: repo }, stdio: 'pipe' });

function writeActor(folder, what) {
    mkdirSync(path.join(folder, '.actor'), { recursive: true });
    writeFileSync(path.join(folder, '.actor', 'actor.json'), '{"actorSpecification": 1, "startCommand": "sh main.sh"}');
    writeFileSync(path.join(folder, 'main.sh'), `echo source=${what}\n`);
}

before(async () => {
    // Builds from local git repositories (CI has no network).
    server = await startServer({ TROUPE_ALLOW_LOCAL_SOURCES: 'true' });
    client = server.client();
    repo = mkdtempSync(path.join(tmpdir(), 'troupe-js-git-'));
    git('init', '-q');
    writeActor(path.join(repo, 'sub'), 'tagged-sub');
    git('add', '-A');
    git('commit', '-q', '-m', 'one');
    git('tag', 'v1.0');
    writeActor(path.join(repo, 'sub'), 'later');
    git('commit', '-q', '-am', 'two');
});

after(async () => {
    await server?.stop();
    if (repo) rmSync(repo, { recursive: true, force: true });
});

test('a GIT_REPO Actor (tag + subdirectory) builds and runs', async () => {
    const actor = await client.actors().create({
        name: unique('js-git'),
        versions: [{ versionNumber: '0.1', sourceType: 'GIT_REPO', gitRepoUrl: `file://${repo}#v1.0:sub` }],
        defaultRunOptions: { build: 'latest', memoryMbytes: 128, timeoutSecs: 120 },
    });
    const version = await client.actor(actor.id).version('0.1').get();
    assert.equal(version.sourceType, 'GIT_REPO');
    const started = await client.actor(actor.id).build('0.1', { waitForFinish: 60 });
    const build = await client.build(started.id).waitForFinish();
    const log = await client.build(build.id).log().get();
    assert.equal(build.status, 'SUCCEEDED', log);
    assert.match(log, /Checked out commit [0-9a-f]{40}/);
    assert.equal(build.actVersion.gitRepoUrl, `file://${repo}#v1.0:sub`);

    const run = await finished(client, await client.actor(actor.id).start());
    assert.equal(run.status, 'SUCCEEDED');
    assert.match(await client.run(run.id).log().get(), /source=tagged-sub/);
    // Built from a tag, not a branch: no gitBranchName.
    assert.equal((await client.run(run.id).get()).gitBranchName, null);
});

test('a GIT_REPO version without a URL is refused', async () => {
    const actor = await client.actors().create({ name: unique('js-git-bad') });
    await assert.rejects(
        client.actor(actor.id).versions().create({ versionNumber: '0.1', sourceType: 'GIT_REPO' }),
        (err) => err.statusCode === 400 && err.type === 'invalid-input',
    );
    assert.equal((await client.actor(actor.id).versions().list()).total, 0);
});
