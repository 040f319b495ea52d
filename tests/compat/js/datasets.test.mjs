// Datasets through the official JavaScript apify-client: every dataset operation, listItems and
// its async iteration with each parameter, and downloadItems in every format parsed with real
// parsers (csv-parse, fast-xml-parser, read-excel-file), compared by value.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseCsv } from 'csv-parse/sync';
import { XMLParser } from 'fast-xml-parser';
import { readSheet } from 'read-excel-file/node';
import { ApifyClient } from 'apify-client';
import { startServer, unique } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });


// Nested objects and arrays, hidden fields, empty items, null, booleans, numbers, characters that
// CSV/XML/HTML must escape, and a failed page.
const ITEMS = [
    { id: 1, title: 'Alpha & <b>bold</b>', price: 9.5, tags: ['x', 'y'], address: { city: 'Prague', zip: '11000' }, '#secret': 's1', ok: true },
    { id: 2, title: 'Beta, "quoted"\nsecond line', price: 10, tags: [], address: { city: 'Brno' }, ok: false, extra: null },
    { '#only': 'hidden' },
    {},
    { id: 5, title: 'Ünïcødé ✓', tags: ['z'], errorInfo: 'failed' },
];

// ---- reference conventions (README, Datasets) ----
const isEmptyContainer = (v) => v === null || (Array.isArray(v) && v.length === 0)
    || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);
const cellText = (v) => {
    if (v === undefined || isEmptyContainer(v)) return '';
    if (typeof v === 'boolean' || typeof v === 'number') return String(v);
    return v;
};
function* leaves(path, value) {
    if (Array.isArray(value) && value.length) {
        for (const [i, child] of value.entries()) yield* leaves(`${path}/${i}`, child);
    } else if (value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length) {
        for (const [k, child] of Object.entries(value)) yield* leaves(`${path}/${k}`, child);
    } else {
        yield [path, value];
    }
}
function table(items) {
    const columns = [];
    const rows = items.map((item) => {
        const row = {};
        for (const [key, value] of Object.entries(item)) {
            for (const [path, leaf] of leaves(key, value)) {
                row[path] = leaf;
                if (!columns.includes(path)) columns.push(path);
            }
        }
        return row;
    });
    return { columns, rows };
}
const xmlName = (name) => {
    let out = name.replace(/[^A-Za-z0-9_.-]/g, '_');
    if (!/^[A-Za-z_]/.test(out)) out = `_${out}`;
    return out;
};
function* xmlEvents(name, value) {
    if (Array.isArray(value)) {
        for (const element of value) yield* xmlEvents(name, element);
    } else if (value && typeof value === 'object') {
        yield [name, null];
        for (const [k, child] of Object.entries(value)) yield* xmlEvents(xmlName(k), child);
    } else {
        yield [name, cellText(value)];
    }
}
// fast-xml-parser's preserveOrder nodes → the same (tag, text) events.
function* parsedEvents(node) {
    const tag = Object.keys(node).find((k) => k !== ':@');
    const children = node[tag];
    const elements = children.filter((c) => !('#text' in c));
    if (elements.length) {
        yield [tag, null];
        for (const child of elements) yield* parsedEvents(child);
    } else {
        yield [tag, children.map((c) => c['#text']).join('')];
    }
}
const xmlParser = () => new XMLParser({ preserveOrder: true, parseTagValue: false, trimValues: false, ignoreDeclaration: true, ignoreAttributes: false });

async function richDataset() {
    const client = server.client();
    const ds = await client.datasets().getOrCreate(unique('js-rich'));
    await client.dataset(ds.id).pushItems(ITEMS);
    return client.dataset(ds.id);
}

test('collection: create, getOrCreate, list with offset/limit/desc/unnamed, get, update, delete, statistics', async () => {
    const fresh = await startServer();
    try {
        const client = fresh.client();
        const unnamed = [await client.datasets().getOrCreate(), await client.datasets().getOrCreate()];
        assert.notEqual(unnamed[0].id, unnamed[1].id);
        assert.equal(unnamed[0].name, null);
        const names = [unique('js-a'), unique('js-b'), unique('js-c')];
        const named = [];
        for (const name of names) named.push(await client.datasets().getOrCreate(name));
        assert.equal((await client.datasets().getOrCreate(names[1])).id, named[1].id);
        // 201 on create, 200 when it exists
        const post = (name) => fetch(`${fresh.api}/datasets?name=${name}`, { method: 'POST', headers: { authorization: `Bearer ${fresh.token}` } });
        assert.equal((await post(names[0])).status, 200);
        assert.equal((await post(unique('js-new'))).status, 201);

        let page = await client.datasets().list();
        assert.equal(page.total, 4);
        assert.equal(page.count, 4);
        assert.deepEqual(page.items.slice(0, 3).map((d) => d.id), named.map((d) => d.id));
        page = await client.datasets().list({ offset: 1, limit: 1 });
        assert.deepEqual(page.items.map((d) => d.id), [named[1].id]);
        assert.equal(page.limit, 1);
        assert.equal(page.offset, 1);
        page = await client.datasets().list({ desc: true });
        assert.equal(page.desc, true);
        assert.deepEqual(page.items.slice(1).map((d) => d.id), named.map((d) => d.id).reverse());
        page = await client.datasets().list({ unnamed: true });
        assert.equal(page.total, 6);
        assert.deepEqual(page.items.slice(0, 2).map((d) => d.id), unnamed.map((d) => d.id));

        const ds = client.dataset(named[0].id);
        assert.equal((await ds.get()).name, names[0]);
        assert.equal((await client.dataset(`~${names[0]}`).get()).id, named[0].id);
        assert.equal((await client.dataset(`troupe~${names[0]}`).get()).id, named[0].id);
        assert.equal((await client.dataset(`troupe/${names[0]}`).get()).id, named[0].id);
        assert.equal(await client.dataset('~no-such-dataset').get(), undefined);
        assert.equal(await client.dataset('aaaaaaaaaaaaaaaaa').get(), undefined);

        const renamed = unique('js-renamed');
        const updated = await ds.update({ name: renamed, generalAccess: 'ANYONE_WITH_ID_CAN_READ' });
        assert.equal(updated.name, renamed);
        assert.equal(updated.generalAccess, 'ANYONE_WITH_ID_CAN_READ');
        assert.equal((await ds.get()).name, renamed);
        assert.equal(await client.dataset(`~${names[0]}`).get(), undefined);
        const anonymous = new ApifyClient({ baseUrl: fresh.origin, maxRetries: 0 });
        assert.deepEqual((await anonymous.dataset(named[0].id).listItems()).items, []);
        await assert.rejects(anonymous.dataset(named[0].id).pushItems({ a: 1 }));

        await ds.pushItems([{ price: 3, name: 'ab' }, { price: 5 }]);
        const stats = await ds.getStatistics();
        assert.deepEqual(stats.fieldStatistics.price, { min: 3, max: 5, nullCount: 0, emptyCount: 0 });
        assert.equal(stats.fieldStatistics.name.emptyCount, 1);
        await ds.delete();
        assert.equal(await ds.get(), undefined);
        assert.equal((await client.datasets().list()).total, 3);
    } finally {
        await fresh.stop();
    }
});

test('dataset object fields', async () => {
    const client = server.client();
    const ds = await client.datasets().getOrCreate(unique('js-fields'));
    await client.dataset(ds.id).pushItems([{ a: 1 }, { '#h': 1 }, {}]);
    const got = await client.dataset(ds.id).get();
    assert.equal(got.itemCount, 3);
    assert.equal(got.cleanItemCount, 1);
    assert.ok(got.createdAt instanceof Date && got.modifiedAt instanceof Date && got.accessedAt instanceof Date);
    assert.ok(got.consoleUrl && got.itemsPublicUrl && got.urlSigningSecretKey && got.userId);
    // Every items read counts (buffered: it shows within seconds).
    const before = got.stats.readCount;
    for (let i = 0; i < 3; i += 1) await client.dataset(ds.id).listItems();
    const deadline = Date.now() + 60_000;
    let count = before;
    while (count < before + 3 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        count = (await client.dataset(ds.id).get()).stats.readCount;
    }
    assert.equal(count, before + 3);
});

test('pushItems: one object, a string, and large arrays (compressed by the client)', async () => {
    const client = server.client();
    const ds = client.dataset((await client.datasets().getOrCreate(unique('js-push'))).id);
    await ds.pushItems({ single: true });
    const big = Array.from({ length: 3000 }, (_, n) => ({ n, text: 'lorem ipsum '.repeat(20), nested: { k: [n, String(n)] } }));
    assert.ok(JSON.stringify(big).length > 500_000);
    await ds.pushItems(big);
    await ds.pushItems(JSON.stringify([{ as: 'string' }]));
    const items = [];
    for await (const item of ds.listItems({ chunkSize: 1000 })) items.push(item);
    assert.deepEqual(items[0], { single: true });
    assert.deepEqual(items.slice(1, 3001), big);
    assert.deepEqual(items[3001], { as: 'string' });
    assert.equal((await ds.get()).itemCount, 3002);
    await assert.rejects(ds.pushItems([{ ok: 1 }, 'not an object']), (err) => err.statusCode === 400);
    assert.equal((await ds.get()).itemCount, 3002);
});

test('listItems: paging, desc and headers', async () => {
    const ds = await richDataset();
    let page = await ds.listItems();
    assert.deepEqual(page.items, ITEMS);
    assert.equal(page.total, 5);
    assert.equal(page.offset, 0);
    assert.equal(page.limit, 999999999999);
    assert.equal(page.desc, false);
    page = await ds.listItems({ offset: 1, limit: 2 });
    assert.deepEqual(page.items, ITEMS.slice(1, 3));
    assert.equal(page.limit, 2);
    page = await ds.listItems({ desc: true, limit: 2 });
    assert.deepEqual(page.items, [ITEMS[4], ITEMS[3]]);
    assert.equal(page.desc, true);
    page = await ds.listItems({ offset: 10 });
    assert.deepEqual(page.items, []);
    assert.equal(page.total, 5);
});

test('listItems: fields, omit, unwind, flatten, clean, skipEmpty, skipHidden', async () => {
    const ds = await richDataset();
    let page = await ds.listItems({ fields: ['title', 'id'], limit: 2 });
    assert.deepEqual(page.items, [{ title: ITEMS[0].title, id: 1 }, { title: ITEMS[1].title, id: 2 }]);
    assert.deepEqual(Object.keys(page.items[0]), ['title', 'id']);
    page = await ds.listItems({ omit: ['tags', 'address', '#secret', 'title'], limit: 2 });
    assert.deepEqual(page.items, [{ id: 1, price: 9.5, ok: true }, { id: 2, price: 10, ok: false, extra: null }]);
    page = await ds.listItems({ unwind: 'tags', fields: ['id', 'tags'] });
    assert.deepEqual(page.items, [{ id: 1, tags: 'x' }, { id: 1, tags: 'y' }, { id: 2 }, {}, {}, { id: 5, tags: 'z' }]);
    page = await ds.listItems({ unwind: ['address'], fields: ['id', 'city', 'zip'], limit: 2 });
    assert.deepEqual(page.items, [{ id: 1, city: 'Prague', zip: '11000' }, { id: 2, city: 'Brno' }]);
    page = await ds.listItems({ flatten: ['address'], fields: ['id', 'address'], limit: 2 });
    assert.deepEqual(page.items, [{ id: 1, 'address.city': 'Prague', 'address.zip': '11000' }, { id: 2, 'address.city': 'Brno' }]);
    const visible = (it) => Object.fromEntries(Object.entries(it).filter(([k]) => !k.startsWith('#')));
    page = await ds.listItems({ clean: true });
    assert.deepEqual(page.items, ITEMS.map(visible).filter((it) => Object.keys(it).length));
    page = await ds.listItems({ skipEmpty: true });
    assert.deepEqual(page.items, ITEMS.filter((it) => Object.keys(it).length));
    page = await ds.listItems({ skipHidden: true });
    assert.deepEqual(page.items, ITEMS.map(visible));
});

test('async iteration of listItems with each parameter', async () => {
    const client = server.client();
    const ds = client.dataset((await client.datasets().getOrCreate(unique('js-iter'))).id);
    const items = Array.from({ length: 2500 }, (_, n) => (n % 10 ? { n, '#h': n } : { '#h': n }));
    await ds.pushItems(items);
    const collect = async (options) => {
        const out = [];
        for await (const item of ds.listItems(options)) out.push(item);
        return out;
    };
    assert.deepEqual(await collect({ chunkSize: 300 }), items);
    assert.deepEqual(await collect({ offset: 2400 }), items.slice(2400));
    assert.deepEqual(await collect({ offset: 100, limit: 250, chunkSize: 100 }), items.slice(100, 350));
    assert.deepEqual(await collect({ desc: true, chunkSize: 700 }), [...items].reverse());
    assert.deepEqual(await collect({ fields: ['n'], limit: 2 }), [{}, { n: 1 }]);
    assert.deepEqual(await collect({ omit: ['#h'], offset: 1, limit: 1 }), [{ n: 1 }]);
    assert.deepEqual(await collect({ skipHidden: true, limit: 3 }), [{}, { n: 1 }, { n: 2 }]);
    assert.deepEqual(await collect({ offset: 5000 }), []);
    // clean/skipEmpty shrink pages, and this client advances its offset by the items it got (not
    // by X-Apify-Pagination-Count), so read them in one page: no limit means the whole dataset.
    const clean = await ds.listItems({ clean: true });
    assert.deepEqual(clean.items, items.filter((_, n) => n % 10).map(({ n }) => ({ n })));
    assert.deepEqual(await collect({ skipEmpty: true, limit: 3 }), items.slice(0, 3));
});

test('downloadItems: json, jsonl and bom', async () => {
    const ds = await richDataset();
    assert.deepEqual(JSON.parse((await ds.downloadItems('json')).toString()), ITEMS);
    assert.deepEqual(JSON.parse((await ds.downloadItems('json', { desc: true, limit: 1 })).toString()), [ITEMS[4]]);
    const lines = (await ds.downloadItems('jsonl')).toString().split('\n').filter(Boolean);
    assert.deepEqual(lines.map((l) => JSON.parse(l)), ITEMS);
    const withBom = await ds.downloadItems('json', { bom: true });
    assert.deepEqual([...withBom.subarray(0, 3)], [0xef, 0xbb, 0xbf]);
    assert.deepEqual(JSON.parse(withBom.subarray(3).toString()), ITEMS);
});

test('downloadItems: csv values, bom, delimiter, skipHeaderRow, fields order', async () => {
    const ds = await richDataset();
    const data = await ds.downloadItems('csv');
    assert.deepEqual([...data.subarray(0, 3)], [0xef, 0xbb, 0xbf]);
    const rows = parseCsv(data, { bom: true, relax_column_count: false });
    const { columns, rows: expected } = table(ITEMS);
    assert.deepEqual(rows[0], columns);
    assert.ok(columns.includes('address/city') && columns.includes('tags/1'));
    assert.deepEqual(rows.slice(1), expected.map((row) => columns.map((c) => cellText(row[c]))));

    const plain = await ds.downloadItems('csv', { bom: false, delimiter: ';', skipHeaderRow: true, fields: ['title', 'id'], limit: 2 });
    assert.notEqual(plain[0], 0xef);
    assert.deepEqual(parseCsv(plain, { delimiter: ';' }), [[ITEMS[0].title, '1'], [ITEMS[1].title, '2']]);

    const tabbed = await ds.downloadItems('csv', { delimiter: '\t', clean: true, fields: ['id', 'tags'] });
    assert.deepEqual(parseCsv(tabbed, { bom: true, delimiter: '\t' }), [
        ['id', 'tags/0', 'tags/1', 'tags'], ['1', 'x', 'y', ''], ['2', '', '', ''], ['5', 'z', '', '']]);
});

test('downloadItems: xlsx values', async () => {
    const ds = await richDataset();
    const rows = await readSheet(await ds.downloadItems('xlsx'));
    const { columns, rows: expected } = table(ITEMS);
    assert.deepEqual(rows[0], columns);
    assert.equal(rows.length, 1 + ITEMS.length);
    expected.forEach((row, i) => {
        const want = columns.map((c) => (row[c] === undefined || isEmptyContainer(row[c]) ? null : row[c]));
        assert.deepEqual(rows[i + 1], want);
    });
});

test('downloadItems: html values', async () => {
    const ds = await richDataset();
    const html = (await ds.downloadItems('html')).toString();
    const parser = new XMLParser({ preserveOrder: false, parseTagValue: false, trimValues: false, ignoreDeclaration: true, unpairedTags: ['meta'], processEntities: true, htmlEntities: true, isArray: (name) => ['tr', 'td', 'th'].includes(name) });
    const doc = parser.parse(html.replace(/^<!DOCTYPE[^>]*>/i, ''));
    const table_ = doc.html.body.table;
    const header = table_.thead.tr[0].th.map(String);
    const body = table_.tbody.tr.map((tr) => tr.td.map((td) => (td === '' ? '' : String(td))));
    const { columns, rows: expected } = table(ITEMS);
    assert.deepEqual(header, columns);
    assert.deepEqual(body, expected.map((row) => columns.map((c) => cellText(row[c]))));
});

test('downloadItems: xml and rss values, xmlRoot and xmlRow', async () => {
    const ds = await richDataset();
    const doc = xmlParser().parse((await ds.downloadItems('xml')).toString());
    const root = doc.find((n) => 'items' in n);
    const rows = root.items.filter((n) => !('#text' in n));
    assert.equal(rows.length, ITEMS.length);
    rows.forEach((row, i) => {
        if (Object.keys(ITEMS[i]).length === 0) return assert.deepEqual(row.item.filter((n) => !('#text' in n)), []);
        assert.deepEqual([...parsedEvents(row)], [...xmlEvents('item', ITEMS[i])]);
    });
    const custom = xmlParser().parse((await ds.downloadItems('xml', { xmlRoot: 'products', xmlRow: 'product', limit: 1, fields: ['id', 'tags'] })).toString());
    const products = custom.find((n) => 'products' in n).products.filter((n) => !('#text' in n));
    assert.deepEqual(products.map((p) => [...parsedEvents(p)]), [[['product', null], ['id', '1'], ['tags', 'x'], ['tags', 'y']]]);

    const rss = xmlParser().parse((await ds.downloadItems('rss', { limit: 2 })).toString());
    const channel = rss.find((n) => 'rss' in n).rss.find((n) => 'channel' in n).channel;
    const rssItems = channel.filter((n) => 'item' in n);
    assert.ok(channel.some((n) => 'title' in n));
    assert.equal(rssItems.length, 2);
    rssItems.forEach((row, i) => assert.deepEqual([...parsedEvents(row)], [...xmlEvents('item', ITEMS[i])]));
});

test('attachment and content types', async () => {
    const ds = await richDataset();
    const expected = {
        json: 'application/json', jsonl: 'application/jsonl', csv: 'text/csv', html: 'text/html', xml: 'application/xml',
        rss: 'application/rss+xml', xlsx: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
    };
    for (const [format, type] of Object.entries(expected)) {
        assert.ok((await ds.downloadItems(format, { attachment: true })).length > 0);
        const url = `${server.api}/datasets/${ds.id}/items?format=${format}&attachment=1&token=${server.token}`;
        const response = await fetch(url);
        assert.ok(response.headers.get('content-type').startsWith(type), format);
        assert.match(response.headers.get('content-disposition'), new RegExp(`^attachment;.*\\.${format}"?$`));
        await response.arrayBuffer();
        const inline = await fetch(url.replace('&attachment=1', ''));
        assert.equal(inline.headers.get('content-disposition'), null);
        await inline.arrayBuffer();
    }
});

test('createItemsPublicUrl: signed URLs read a restricted dataset without a token', async () => {
    const client = new ApifyClient({ token: server.token, baseUrl: server.origin, publicBaseUrl: server.origin, maxRetries: 0 });
    const ds = client.dataset((await client.datasets().getOrCreate(unique('js-signed'))).id);
    await ds.pushItems([{ n: 1 }, { n: 2 }]);
    assert.equal((await fetch(`${server.api}/datasets/${ds.id}/items`)).status, 401);
    const url = await ds.createItemsPublicUrl({ limit: 1, expiresInSecs: 300 });
    assert.match(url, /signature=/);
    assert.doesNotMatch(url, /token=/);
    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), [{ n: 1 }]);
    const forever = await ds.createItemsPublicUrl({ desc: true, limit: 1 });
    assert.deepEqual(await (await fetch(forever)).json(), [{ n: 2 }]);
    const tampered = await fetch(url.replace('signature=', 'signature=x'));
    assert.notEqual(tampered.status, 200);
    await tampered.arrayBuffer();
});
