// mongosh against a running cairnd over MongoDB's wire protocol: the shell helpers (which send
// MongoDB's commands through the Node.js driver) with assertions.
//
// Usage: mongosh --quiet --norc mongodb://127.0.0.1:PORT/ mongosh_suite.js
// Run by server/tests/wire_clients.rs; prints one line per check and "N passed, N failed";
// exits 1 if any check failed.

const assert = require('assert');
const suite = db.getSiblingDB('mongosh_suite');
suite.dropDatabase();

// Values from the shell's context compare by their Extended JSON text (deepStrictEqual also
// compares prototypes, which differ across mongosh's evaluation contexts).
const show = (value) => EJSON.stringify(value);
const same = (actual, expected) => assert.strictEqual(show(actual), show(expected));

const checks = [];
function check(name, body) {
  checks.push({ name, body });
}

check('handshake and server info', () => {
  assert.strictEqual(db.adminCommand({ ping: 1 }).ok, 1);
  assert.strictEqual(db.version(), '8.0.0');
  const hello = db.hello();
  assert.strictEqual(hello.isWritablePrimary, true);
  assert.strictEqual(db.getLogComponents().verbosity, 0);
  const status = db.serverStatus();
  assert.ok(status.connections.current >= 1, show(status.connections));
  // db.currentOp() is the $currentOp aggregation stage in mongosh; the command is the same data.
  const current = db.adminCommand({ currentOp: 1, $all: true });
  const own = current.inprog.filter((op) => op.command && op.command.currentOp);
  assert.ok(own.length > 0, show(current));
  assert.ok(own[0].clientMetadata.application.name.startsWith('mongosh'), show(own[0]));
});

check('insert, find, update, delete', () => {
  const items = suite.items;
  const docs = [];
  for (let i = 0; i < 120; i++) docs.push({ _id: i, group: i % 3, name: `item-${i}` });
  assert.strictEqual(Object.keys(items.insertMany(docs).insertedIds).length, 120);
  assert.strictEqual(items.countDocuments({}), 120);
  assert.strictEqual(items.countDocuments({ group: 1 }), 40);
  const top = items.find({ group: 2 }, { _id: 1 }).sort({ _id: -1 }).limit(3).toArray();
  same(top.map((d) => d._id), [119, 116, 113]);
  assert.strictEqual(items.find().batchSize(7).toArray().length, 120);
  const updated = items.updateMany({ group: 0 }, { $set: { flag: true } });
  assert.strictEqual(updated.modifiedCount, 40);
  // mongosh names the upserted _id insertedId.
  const upsert = items.updateOne({ _id: 500 }, { $set: { a: 1 } }, { upsert: true });
  assert.strictEqual(upsert.upsertedCount, 1);
  assert.strictEqual(upsert.insertedId, 500);
  assert.strictEqual(items.replaceOne({ _id: 1 }, { name: 'one' }).modifiedCount, 1);
  const after = items.findOneAndUpdate({ _id: 2 }, { $inc: { hits: 1 } }, { returnDocument: 'after' });
  assert.strictEqual(after.hits, 1);
  // _id 1 (group 1) was replaced by a document without a group.
  assert.strictEqual(items.deleteMany({ group: 1 }).deletedCount, 39);
  assert.strictEqual(items.deleteOne({ _id: 500 }).deletedCount, 1);
  same(items.distinct('group').sort(), [0, 2]);
});

check('bulk write', () => {
  const result = suite.bulk.bulkWrite([
    { insertOne: { document: { _id: 1 } } },
    { insertOne: { document: { _id: 2 } } },
    { updateOne: { filter: { _id: 1 }, update: { $set: { v: 1 } } } },
    { deleteOne: { filter: { _id: 2 } } },
  ]);
  assert.strictEqual(result.insertedCount, 2);
  assert.strictEqual(result.modifiedCount, 1);
  assert.strictEqual(result.deletedCount, 1);
});

check('unique index and duplicate key error', () => {
  const users = suite.users;
  users.insertMany([{ _id: 1, email: 'a@x' }, { _id: 2, email: 'b@x' }]);
  assert.strictEqual(users.createIndex({ email: 1 }, { unique: true }), 'email_1');
  assert.ok(users.getIndexes().some((index) => index.name === 'email_1' && index.unique));
  try {
    users.insertOne({ _id: 3, email: 'a@x' });
    assert.fail('a duplicate email is refused');
  } catch (error) {
    assert.strictEqual(error.code, 11000, String(error));
    assert.strictEqual(error.codeName, 'DuplicateKey');
  }
  const plan = users.find({ email: 'b@x' }).explain();
  assert.ok(JSON.stringify(plan.queryPlanner.winningPlan).includes('IXSCAN'), show(plan));
  users.dropIndex('email_1');
  assert.ok(!users.getIndexes().some((index) => index.name === 'email_1'));
});

check('aggregation', () => {
  suite.sales.insertMany([{ item: 'a', qty: 1 }, { item: 'a', qty: 4 }, { item: 'b', qty: 2 }]);
  const groups = suite.sales
    .aggregate([{ $group: { _id: '$item', total: { $sum: '$qty' } } }, { $sort: { _id: 1 } }])
    .toArray();
  same(groups, [{ _id: 'a', total: 5 }, { _id: 'b', total: 2 }]);
});

check('w:0 writes then a read sees them', () => {
  for (let i = 0; i < 30; i++) suite.events.insertOne({ _id: i }, { writeConcern: { w: 0 } });
  suite.events.insertMany([{ _id: 100 }, { _id: 101 }], { writeConcern: { w: 0 } });
  assert.strictEqual(suite.events.countDocuments({}), 32);
});

check('documents near 16 MiB', () => {
  const text = 'x'.repeat(16 * 1024 * 1024 - 1024);
  suite.large.insertOne({ _id: 1, text });
  assert.strictEqual(suite.large.findOne({ _id: 1 }).text.length, text.length);
});

check('databases and collections', () => {
  const names = db.adminCommand({ listDatabases: 1, nameOnly: true }).databases.map((d) => d.name);
  assert.ok(names.includes('mongosh_suite'), show(names));
  const collections = suite.getCollectionNames();
  assert.ok(collections.includes('items') && collections.includes('users'), show(collections));
  suite.sales.drop();
  assert.ok(!suite.getCollectionNames().includes('sales'));
});

check('errors come back as MongoServerError', () => {
  try {
    db.runCommand({ noSuchCommand: 1 });
    assert.fail('an unknown command fails');
  } catch (error) {
    assert.strictEqual(error.name, 'MongoServerError');
    assert.strictEqual(error.code, 59);
  }
});

let failed = 0;
for (const { name, body } of checks) {
  try {
    body();
    print(`ok     ${name}`);
  } catch (error) {
    failed += 1;
    print(`FAILED ${name}: ${error && error.stack ? error.stack : error}`);
  }
}
print(`mongosh ${version()}: ${checks.length - failed} passed, ${failed} failed`);
if (failed > 0) quit(1);
