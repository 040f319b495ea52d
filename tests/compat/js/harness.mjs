// Fixture: starts the real troupe binary ($TROUPE_BIN) on a random port.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { ApifyClient } from 'apify-client';

export const TOKEN = 'compat-token-0123456789';
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
// How long a test waits for something that must happen before failing: generous, since CI
// machines may be slow and loaded; waiting ends as soon as the thing happens.
const PATIENCE_MS = 300_000;
const FINISHED = ['SUCCEEDED', 'FAILED', 'TIMED-OUT', 'ABORTED'];

export async function startServer(extraEnv = {}) {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'troupe-js-'));
    const bin = process.env.TROUPE_BIN || path.join(ROOT, 'target', 'release', 'troupe');
    const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
        env: { ...process.env, TROUPE_TOKEN: TOKEN, RUST_LOG: 'warn', ...extraEnv },
        stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout });
    const origin = await new Promise((resolve, reject) => {
        child.on('exit', (code) => reject(new Error(`troupe exited with ${code}`)));
        lines.on('line', (line) => {
            const m = line.match(/listening on (http:\/\/\S+)/);
            if (m) resolve(m[1]);
        });
    });
    return {
        origin,
        api: `${origin}/v2`,
        token: TOKEN,
        dataDir,
        client: () => new ApifyClient({ token: TOKEN, baseUrl: origin, maxRetries: 0 }),
        async stop() {
            child.kill('SIGTERM');
            await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
            rmSync(dataDir, { recursive: true, force: true });
        },
    };
}

export const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

/** A file in tests/compat/shared (programs both compat suites run). */
export const sharedFile = (name) => readFileSync(path.join(ROOT, 'tests', 'compat', 'shared', name), 'utf8');

/** The source files of an Actor whose program is `script` (run with /bin/sh). */
export const shellFiles = (script) => [
    { name: '.actor/actor.json', format: 'TEXT', content: '{"actorSpecification": 1, "startCommand": "sh main.sh"}' },
    { name: 'main.sh', format: 'TEXT', content: script },
];

/** Creates an Actor from SOURCE_FILES and builds version 0.1, waiting however long the build takes. */
export async function createAndBuild(client, files, { name = 'js-actor', memory = 1024, timeoutSecs = 600 } = {}) {
    const actor = await client.actors().create({
        name: unique(name),
        versions: [{ versionNumber: '0.1', sourceType: 'SOURCE_FILES', sourceFiles: files }],
        defaultRunOptions: { build: 'latest', memoryMbytes: memory, timeoutSecs },
    });
    const started = await client.actor(actor.id).build('0.1', { waitForFinish: 60 });
    const build = await client.build(started.id).waitForFinish();
    assert.equal(build.status, 'SUCCEEDED', await client.build(build.id).log().get());
    return actor;
}

/** Waits until `run` ends (however long that takes); returns it. */
export async function finished(client, run) {
    const deadline = Date.now() + PATIENCE_MS;
    for (;;) {
        const now = await client.run(run.id).waitForFinish({ waitSecs: 60 });
        if (FINISHED.includes(now.status)) return now;
        assert.ok(Date.now() < deadline, `run ${run.id} did not finish`);
    }
}

/** Polls `probe` until it returns something truthy; returns that. */
export async function eventually(what, probe) {
    const deadline = Date.now() + PATIENCE_MS;
    for (;;) {
        const value = await probe();
        if (value) return value;
        assert.ok(Date.now() < deadline, `gave up waiting for: ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

/** Waits until the log of run `id` contains `needle`; returns the log. */
export const waitForLog = (client, id, needle) => eventually(`${needle} in the log of ${id}`, async () => {
    const log = (await client.run(id).log().get()) ?? '';
    return log.includes(needle) ? log : null;
});

/** A file a test program waits for, so the test (not a sleep) decides when it goes on. */
export class Gate {
    constructor() {
        this.dir = mkdtempSync(path.join(tmpdir(), 'troupe-gate-'));
        this.path = path.join(this.dir, 'open');
    }

    /** A shell command that returns once the gate is open. */
    wait() { return `while [ ! -e '${this.path}' ]; do sleep 0.05; done`; }

    open() { writeFileSync(this.path, ''); }

    isOpen() { return existsSync(this.path); }

    close() { rmSync(this.dir, { recursive: true, force: true }); }
}
