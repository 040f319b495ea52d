// Fixture: starts the real troupe binary ($TROUPE_BIN) on a random port.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ApifyClient } from 'apify-client';

export const TOKEN = 'compat-token-0123456789';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

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
