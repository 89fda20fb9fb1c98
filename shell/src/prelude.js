// cairn shell prelude: mongosh's vocabulary written in JavaScript over a few Rust natives
// (globalThis.__cairn, installed by engine.rs before this file runs):
//   runCommand(db, command, isRead) -> reply          (throws a Mongo*Error on failure)
//   openCursor(db, command, isRead, batchSize) -> handle
//   cursorNext(handle, max) -> [documents]            ([] once exhausted)
//   cursorExhausted(handle) -> bool, cursorClose(handle)
//   inspect(value) -> string (mongosh's format), print(text)
//   newObjectId(), decimalCanonical(text), uuidBase64(text?), base64ToHex(b64), hexToBase64(hex)
//   sleep(ms), quit(code), load(path)
// Command documents are built here, field by field in MongoDB's order, and sent as they are.
(function (global) {
  'use strict';
  const native = global.__cairn;

  function makeError(name, message, props) {
    const error = new Error(message);
    error.name = name;
    if (props) {
      for (const key of Object.keys(props)) {
        error[key] = props[key];
      }
    }
    return error;
  }
  global.__cairnError = makeError;

  function define(target, name, value) {
    Object.defineProperty(target, name, { value, writable: true, configurable: true, enumerable: false });
  }

  // ---- BSON types ------------------------------------------------------------------------------

  function ObjectId(hex) {
    if (!(this instanceof ObjectId)) return new ObjectId(hex);
    if (hex === undefined || hex === null) hex = native.newObjectId();
    else if (hex instanceof ObjectId) hex = hex.hex;
    if (typeof hex !== 'string' || !/^[0-9a-fA-F]{24}$/.test(hex)) {
      throw new TypeError('ObjectId() takes 24 hexadecimal characters, got ' + String(hex));
    }
    define(this, 'hex', hex.toLowerCase());
  }
  define(ObjectId.prototype, '_bsontype', 'ObjectId');
  define(ObjectId.prototype, 'toHexString', function () { return this.hex; });
  define(ObjectId.prototype, 'toString', function () { return this.hex; });
  define(ObjectId.prototype, 'toJSON', function () { return this.hex; });
  define(ObjectId.prototype, 'getTimestamp', function () { return new Date(parseInt(this.hex.slice(0, 8), 16) * 1000); });
  define(ObjectId.prototype, 'equals', function (other) { return other instanceof ObjectId && other.hex === this.hex; });
  ObjectId.isValid = function (hex) { return typeof hex === 'string' && /^[0-9a-fA-F]{24}$/.test(hex); };
  ObjectId.createFromHexString = function (hex) { return new ObjectId(hex); };

  const INT64_MIN = -(2n ** 63n);
  const INT64_MAX = 2n ** 63n - 1n;
  function Long(value) {
    if (!(this instanceof Long)) return new Long(value);
    let big;
    if (value instanceof Long) big = BigInt(value.value);
    else if (typeof value === 'bigint') big = value;
    else if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new TypeError('NumberLong() needs a finite number, got ' + value);
      big = BigInt(Math.trunc(value));
    } else if (typeof value === 'string') {
      if (!/^\s*[-+]?\d+\s*$/.test(value)) throw new TypeError("NumberLong() needs an integer, got '" + value + "'");
      big = BigInt(value.trim());
    } else if (value === undefined) big = 0n;
    else throw new TypeError('NumberLong() needs a number or a string, got ' + typeof value);
    if (big < INT64_MIN || big > INT64_MAX) throw new RangeError('NumberLong() value out of the 64-bit range: ' + big);
    define(this, 'value', big.toString());
  }
  define(Long.prototype, '_bsontype', 'Long');
  define(Long.prototype, 'valueOf', function () { return Number(this.value); });
  define(Long.prototype, 'toNumber', function () { return Number(this.value); });
  define(Long.prototype, 'toBigInt', function () { return BigInt(this.value); });
  define(Long.prototype, 'toString', function () { return this.value; });
  define(Long.prototype, 'toJSON', function () { return this.value; });
  define(Long.prototype, 'equals', function (other) { return other instanceof Long && other.value === this.value; });
  Long.fromNumber = (n) => new Long(n);
  Long.fromString = (s) => new Long(s);
  Long.fromBigInt = (b) => new Long(b);
  const NumberLong = Long;

  function Int32(value) {
    if (!(this instanceof Int32)) return new Int32(value);
    const n = typeof value === 'string' ? Number(value) : Number(value === undefined ? 0 : value);
    if (!Number.isFinite(n)) throw new TypeError('NumberInt() needs a number, got ' + String(value));
    define(this, 'value', Math.trunc(n) | 0);
  }
  define(Int32.prototype, '_bsontype', 'Int32');
  define(Int32.prototype, 'valueOf', function () { return this.value; });
  define(Int32.prototype, 'toString', function () { return String(this.value); });
  define(Int32.prototype, 'toJSON', function () { return this.value; });
  const NumberInt = Int32;

  // A double with an integral value: read back from the server, it keeps its type (a plain JS
  // number with an integral value is written as int32, as in mongosh).
  function Double(value) {
    if (!(this instanceof Double)) return new Double(value);
    define(this, 'value', Number(value === undefined ? 0 : value));
  }
  define(Double.prototype, '_bsontype', 'Double');
  define(Double.prototype, 'valueOf', function () { return this.value; });
  define(Double.prototype, 'toString', function () { return String(this.value); });
  define(Double.prototype, 'toJSON', function () { return this.value; });

  function Decimal128(value) {
    if (!(this instanceof Decimal128)) return new Decimal128(value);
    define(this, 'value', native.decimalCanonical(String(value === undefined ? '0' : value)));
  }
  define(Decimal128.prototype, '_bsontype', 'Decimal128');
  define(Decimal128.prototype, 'toString', function () { return this.value; });
  define(Decimal128.prototype, 'toJSON', function () { return { $numberDecimal: this.value }; });
  define(Decimal128.prototype, 'valueOf', function () { return Number(this.value); });
  Decimal128.fromString = (s) => new Decimal128(s);
  const NumberDecimal = Decimal128;

  function Timestamp(t, i) {
    if (!(this instanceof Timestamp)) return new Timestamp(t, i);
    if (t !== null && typeof t === 'object' && !(t instanceof Long)) {
      i = t.i;
      t = t.t;
    }
    t = t === undefined ? 0 : Number(t);
    i = i === undefined ? 0 : Number(i);
    for (const part of [t, i]) {
      if (!Number.isInteger(part) || part < 0 || part > 0xffffffff) {
        throw new RangeError('Timestamp() parts must be integers from 0 to 4294967295');
      }
    }
    define(this, 't', t);
    define(this, 'i', i);
  }
  define(Timestamp.prototype, '_bsontype', 'Timestamp');
  define(Timestamp.prototype, 'getTime', function () { return this.t; });
  define(Timestamp.prototype, 'getInc', function () { return this.i; });
  define(Timestamp.prototype, 'toJSON', function () { return { $timestamp: { t: this.t, i: this.i } }; });

  function Binary(base64, subType) {
    if (!(this instanceof Binary)) return new Binary(base64, subType);
    subType = subType === undefined ? 0 : Number(subType);
    if (!Number.isInteger(subType) || subType < 0 || subType > 255) throw new RangeError('Binary subtype must be 0-255');
    // Validates and normalises the base64 text.
    const hex = native.base64ToHex(String(base64 === undefined ? '' : base64));
    define(this, 'base64', native.hexToBase64(hex));
    define(this, 'sub_type', subType);
  }
  define(Binary.prototype, '_bsontype', 'Binary');
  define(Binary.prototype, 'toString', function (encoding) { return encoding === 'hex' ? this.hex() : this.base64; });
  define(Binary.prototype, 'hex', function () { return native.base64ToHex(this.base64); });
  define(Binary.prototype, 'length', function () { return this.hex().length / 2; });
  define(Binary.prototype, 'toJSON', function () { return this.base64; });
  Binary.createFromBase64 = (b64, subType) => new Binary(b64, subType);
  Binary.createFromHexString = (hex, subType) => new Binary(native.hexToBase64(hex), subType);
  function BinData(subType, base64) { return new Binary(base64, subType); }
  function HexData(subType, hex) { return new Binary(native.hexToBase64(hex), subType); }
  function UUID(text) { return new Binary(native.uuidBase64(text === undefined ? undefined : String(text)), 4); }
  function MD5(hex) { return new Binary(native.hexToBase64(hex), 5); }

  function BSONRegExp(pattern, options) {
    if (!(this instanceof BSONRegExp)) return new BSONRegExp(pattern, options);
    define(this, 'pattern', String(pattern));
    define(this, 'options', String(options === undefined ? '' : options));
  }
  define(BSONRegExp.prototype, '_bsontype', 'BSONRegExp');

  function Code(code) {
    if (!(this instanceof Code)) return new Code(code);
    define(this, 'code', String(code));
  }
  define(Code.prototype, '_bsontype', 'Code');

  function MinKey() { return MinKey; }
  define(MinKey, '_bsontype', 'MinKey');
  function MaxKey() { return MaxKey; }
  define(MaxKey, '_bsontype', 'MaxKey');

  function ISODate(text) {
    if (text === undefined) return new Date();
    if (typeof text === 'string' && /T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(text)) text += 'Z';
    const date = new Date(text);
    if (isNaN(date.getTime())) throw new TypeError("ISODate(): invalid date '" + text + "'");
    return date;
  }

  Object.assign(global, {
    ObjectId, Long, NumberLong, Int32, NumberInt, Double, Decimal128, NumberDecimal, Timestamp,
    Binary, BinData, HexData, UUID, MD5, BSONRegExp, Code, MinKey, MaxKey, ISODate,
  });

  // ---- helpers -----------------------------------------------------------------------------------

  function isPlainObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value) && value._bsontype === undefined &&
      !(value instanceof Date) && !(value instanceof RegExp);
  }

  function requireDocument(value, what) {
    if (!isPlainObject(value)) throw new TypeError(what + ' must be a document, got ' + native.inspect(value));
    return value;
  }

  function withId(document) {
    requireDocument(document, 'a document to insert');
    if (Object.prototype.hasOwnProperty.call(document, '_id')) return document;
    return Object.assign({ _id: new ObjectId() }, document);
  }

  function hasOperators(document) {
    return Object.keys(document).some((key) => key.startsWith('$'));
  }

  // Copies the options MongoDB knows for a command, in order, renaming where mongosh does.
  function copyOptions(command, options, names) {
    if (!options) return command;
    for (const name of names) {
      const [from, to] = Array.isArray(name) ? name : [name, name];
      if (options[from] !== undefined) command[to] = options[from];
    }
    return command;
  }

  function serverError(entry, name) {
    return makeError(name || 'MongoServerError', entry.errmsg, Object.assign({}, entry));
  }

  // Throws for writeErrors / writeConcernError in a write reply.
  function checkWriteReply(reply, bulk, extra) {
    if (reply.writeErrors && reply.writeErrors.length > 0) {
      const first = reply.writeErrors[0];
      if (bulk) {
        throw makeError('MongoBulkWriteError', first.errmsg, Object.assign({
          code: first.code, codeName: first.codeName, writeErrors: reply.writeErrors,
          result: reply,
        }, extra || {}));
      }
      throw serverError(first);
    }
    if (reply.writeConcernError) {
      throw makeError('MongoWriteConcernError', reply.writeConcernError.errmsg, Object.assign({ result: reply }, reply.writeConcernError));
    }
  }

  // ---- cursors -----------------------------------------------------------------------------------

  const SHELL_BATCH_SIZE = 20;

  // A cursor that no variable holds any more closes its server cursor when it is collected.
  const cursorRegistry = typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry((handle) => native.cursorClose(handle))
    : null;

  class Cursor {
    constructor(collection, command, isRead) {
      define(this, '_collection', collection);
      define(this, '_command', command);
      define(this, '_isRead', isRead !== false);
      define(this, '_handle', null);
      define(this, '_buffer', []);
      define(this, '_mapper', null);
      define(this, '_done', false);
      define(this, '_token', {});
    }
    _check(what) {
      if (this._handle !== null) throw makeError('MongoCursorInUseError', 'Cannot call ' + what + '() after the cursor has started');
    }
    _set(field, value, what) {
      this._check(what);
      this._command[field] = value;
      return this;
    }
    sort(spec) { return this._set('sort', requireDocument(spec, 'sort'), 'sort'); }
    limit(n) { return this._set('limit', n, 'limit'); }
    skip(n) { return this._set('skip', n, 'skip'); }
    batchSize(n) { return this._set('batchSize', n, 'batchSize'); }
    project(spec) { return this._set('projection', requireDocument(spec, 'projection'), 'project'); }
    projection(spec) { return this.project(spec); }
    hint(index) { return this._set('hint', index, 'hint'); }
    maxTimeMS(ms) { return this._set('maxTimeMS', ms, 'maxTimeMS'); }
    comment(text) { return this._set('comment', text, 'comment'); }
    collation(spec) { return this._set('collation', spec, 'collation'); }
    allowDiskUse(allow) { return this._set('allowDiskUse', allow === undefined ? true : allow, 'allowDiskUse'); }
    readConcern(level) { return this._set('readConcern', { level }, 'readConcern'); }
    pretty() { return this; }
    map(fn) {
      const previous = this._mapper;
      this._mapper = previous ? (doc) => fn(previous(doc)) : fn;
      return this;
    }
    // The command in MongoDB's field order (the order the methods were called in does not matter).
    _orderedCommand() {
      const order = ['find', 'aggregate', 'filter', 'pipeline', 'cursor', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize',
        'singleBatch', 'maxTimeMS', 'comment', 'collation', 'allowDiskUse', 'readConcern'];
      // The command name always comes first.
      const name = Object.keys(this._command)[0];
      const command = { [name]: this._command[name] };
      for (const key of order) if (this._command[key] !== undefined) command[key] = this._command[key];
      for (const key of Object.keys(this._command)) if (!(key in command)) command[key] = this._command[key];
      if (command.aggregate !== undefined && command.batchSize !== undefined) {
        command.cursor = { batchSize: command.batchSize };
        delete command.batchSize;
      }
      return command;
    }
    _open() {
      if (this._handle === null) {
        const batchSize = this._command.batchSize;
        this._handle = native.openCursor(this._collection._db._name, this._orderedCommand(), this._isRead, batchSize === undefined ? 0 : batchSize);
        // The unregister token is an object of its own: a registry may hold its token strongly.
        if (cursorRegistry !== null) cursorRegistry.register(this, this._handle, this._token);
      }
    }
    _fill(n) {
      this._open();
      while (this._buffer.length < n && !this._done) {
        const batch = native.cursorNext(this._handle, n - this._buffer.length);
        if (batch.length === 0) this._done = true;
        else for (const doc of batch) this._buffer.push(doc);
      }
    }
    hasNext() { this._fill(1); return this._buffer.length > 0; }
    next() {
      this._fill(1);
      if (this._buffer.length === 0) throw makeError('MongoCursorExhaustedError', 'Cursor is exhausted');
      const doc = this._buffer.shift();
      return this._mapper ? this._mapper(doc) : doc;
    }
    tryNext() { return this.hasNext() ? this.next() : null; }
    forEach(fn) { while (this.hasNext()) { if (fn(this.next()) === false) break; } }
    toArray() { const all = []; while (this.hasNext()) all.push(this.next()); return all; }
    itcount() { let n = 0; while (this.hasNext()) { this.next(); n++; } return n; }
    isExhausted() { return this._handle !== null && this._buffer.length === 0 && (this._done || native.cursorExhausted(this._handle)); }
    close() {
      if (this._handle !== null) {
        if (cursorRegistry !== null) cursorRegistry.unregister(this._token);
        native.cursorClose(this._handle);
      }
      this._done = true;
      this._buffer = [];
    }
    [Symbol.iterator]() {
      const cursor = this;
      return { next() { return cursor.hasNext() ? { value: cursor.next(), done: false } : { value: undefined, done: true }; } };
    }
    // The next batch shown by the REPL and by `it`.
    _shellBatch() {
      const batch = [];
      while (batch.length < SHELL_BATCH_SIZE && this.hasNext()) batch.push(this.next());
      return batch;
    }
    count() {
      const c = this._command;
      if (c.find === undefined) throw makeError('MongoshInvalidInputError', 'count() is only for find cursors');
      const command = { count: c.find, query: c.filter || {} };
      copyOptions(command, c, ['limit', 'skip', 'hint', 'maxTimeMS', 'collation']);
      return this._collection._db._run(command, true).n;
    }
    size() { return this.count(); }
    explain(verbosity) {
      const inner = this._orderedCommand();
      delete inner.cursor;
      return this._collection._db._run({ explain: inner, verbosity: verbosity || 'queryPlanner' }, true);
    }
  }

  // ---- collections --------------------------------------------------------------------------------

  class Collection {
    constructor(db, name) {
      define(this, '_db', db);
      define(this, '_name', name);
    }
    getName() { return this._name; }
    getFullName() { return this._db._name + '.' + this._name; }
    getDB() { return this._db._proxy; }
    toString() { return this.getFullName(); }
    _write(command) { return this._db._run(command, false); }

    insertOne(document, options) {
      const doc = withId(document);
      const command = copyOptions({ insert: this._name, documents: [doc] }, options, ['writeConcern', 'bypassDocumentValidation', 'comment']);
      checkWriteReply(this._write(command), false);
      return { acknowledged: true, insertedId: doc._id };
    }
    insertMany(documents, options) {
      if (!Array.isArray(documents)) throw new TypeError('insertMany() takes an array of documents');
      const docs = documents.map(withId);
      const insertedIds = {};
      const ordered = !(options && options.ordered === false);
      const command = copyOptions({ insert: this._name, documents: docs, ordered }, options, ['writeConcern', 'bypassDocumentValidation', 'comment']);
      const reply = this._write(command);
      const failed = new Set((reply.writeErrors || []).map((e) => e.index));
      const firstFailure = failed.size > 0 ? Math.min(...failed) : Infinity;
      docs.forEach((doc, index) => {
        if (!failed.has(index) && (!ordered || index < firstFailure)) insertedIds[index] = doc._id;
      });
      checkWriteReply(reply, true, { insertedIds, insertedCount: reply.n });
      return { acknowledged: true, insertedIds };
    }
    _update(filter, update, options, multi, replace) {
      requireDocument(filter || {}, 'filter');
      if (replace) {
        requireDocument(update, 'replacement');
        if (hasOperators(update)) throw makeError('MongoInvalidArgumentError', 'Replacement document must not contain atomic operators');
      } else if (!Array.isArray(update)) {
        requireDocument(update, 'update');
        if (!hasOperators(update)) throw makeError('MongoInvalidArgumentError', 'Update document requires atomic operators');
      }
      const statement = copyOptions({ q: filter || {}, u: update }, options, ['upsert']);
      if (multi) statement.multi = true;
      copyOptions(statement, options, ['arrayFilters', 'hint', 'collation']);
      const command = copyOptions({ update: this._name, updates: [statement], ordered: true }, options, ['writeConcern', 'bypassDocumentValidation', 'comment']);
      const reply = this._write(command);
      checkWriteReply(reply, false);
      const upserted = reply.upserted && reply.upserted.length > 0 ? reply.upserted[0]._id : null;
      return {
        acknowledged: true,
        insertedId: upserted,
        matchedCount: upserted === null ? Number(reply.n) : Number(reply.n) - 1,
        modifiedCount: Number(reply.nModified || 0),
        upsertedCount: upserted === null ? 0 : 1,
      };
    }
    updateOne(filter, update, options) { return this._update(filter, update, options, false, false); }
    updateMany(filter, update, options) { return this._update(filter, update, options, true, false); }
    replaceOne(filter, replacement, options) { return this._update(filter, replacement, options, false, true); }
    _delete(filter, options, limit) {
      const statement = copyOptions({ q: requireDocument(filter || {}, 'filter'), limit }, options, ['hint', 'collation']);
      const command = copyOptions({ delete: this._name, deletes: [statement], ordered: true }, options, ['writeConcern', 'comment']);
      const reply = this._write(command);
      checkWriteReply(reply, false);
      return { acknowledged: true, deletedCount: Number(reply.n) };
    }
    deleteOne(filter, options) { return this._delete(filter, options, 1); }
    deleteMany(filter, options) { return this._delete(filter, options, 0); }

    find(filter, projection, options) {
      const command = { find: this._name, filter: requireDocument(filter || {}, 'filter') };
      if (projection !== undefined) command.projection = requireDocument(projection, 'projection');
      copyOptions(command, options, ['sort', 'skip', 'limit', 'batchSize', 'hint', 'maxTimeMS', 'comment', 'collation', 'allowDiskUse']);
      return new Cursor(this, command, true);
    }
    findOne(filter, projection, options) {
      const command = { find: this._name, filter: requireDocument(filter || {}, 'filter') };
      if (projection !== undefined) command.projection = requireDocument(projection, 'projection');
      copyOptions(command, options, ['sort', 'skip', 'hint', 'maxTimeMS', 'comment', 'collation']);
      command.limit = 1;
      command.singleBatch = true;
      const cursor = new Cursor(this, command, true);
      return cursor.hasNext() ? cursor.next() : null;
    }
    _findAndModify(filter, modification, options) {
      const command = { findAndModify: this._name, query: requireDocument(filter || {}, 'filter') };
      copyOptions(command, options, ['sort', ['projection', 'fields']]);
      Object.assign(command, modification);
      if (!modification.remove) {
        command.new = !!(options && (options.returnDocument === 'after' || options.returnNewDocument === true));
        copyOptions(command, options, ['upsert']);
      }
      copyOptions(command, options, ['arrayFilters', 'maxTimeMS', 'hint', 'collation', 'bypassDocumentValidation', 'writeConcern', 'comment']);
      const reply = this._write(command);
      checkWriteReply(reply, false);
      return reply.value === undefined ? null : reply.value;
    }
    findOneAndUpdate(filter, update, options) {
      if (!Array.isArray(update) && !hasOperators(requireDocument(update, 'update'))) {
        throw makeError('MongoInvalidArgumentError', 'Update document requires atomic operators');
      }
      return this._findAndModify(filter, { update }, options);
    }
    findOneAndReplace(filter, replacement, options) {
      if (hasOperators(requireDocument(replacement, 'replacement'))) {
        throw makeError('MongoInvalidArgumentError', 'Replacement document must not contain atomic operators');
      }
      return this._findAndModify(filter, { update: replacement }, options);
    }
    findOneAndDelete(filter, options) { return this._findAndModify(filter, { remove: true }, options); }

    aggregate(pipeline, options) {
      if (!Array.isArray(pipeline)) pipeline = Array.prototype.slice.call(arguments).filter((stage) => isPlainObject(stage));
      const command = { aggregate: this._name, pipeline, cursor: {} };
      copyOptions(command, options, ['allowDiskUse', 'maxTimeMS', 'comment', 'hint', 'collation', 'let', 'bypassDocumentValidation', 'readConcern', 'writeConcern']);
      if (options && options.batchSize !== undefined) command.cursor = { batchSize: options.batchSize };
      const last = pipeline[pipeline.length - 1];
      const writes = last !== undefined && ('$out' in last || '$merge' in last);
      if (options && options.explain) return this._db._run({ explain: Object.assign(command, { cursor: undefined }), verbosity: 'queryPlanner' }, true);
      return new Cursor(this, command, !writes);
    }
    countDocuments(filter, options) {
      const pipeline = [{ $match: requireDocument(filter || {}, 'filter') }];
      if (options && options.skip !== undefined) pipeline.push({ $skip: options.skip });
      if (options && options.limit !== undefined) pipeline.push({ $limit: options.limit });
      pipeline.push({ $group: { _id: 1, n: { $sum: 1 } } });
      const command = copyOptions({ aggregate: this._name, pipeline, cursor: {} }, options, ['hint', 'maxTimeMS', 'collation', 'comment']);
      const result = new Cursor(this, command, true).toArray();
      return result.length === 0 ? 0 : Number(result[0].n);
    }
    estimatedDocumentCount(options) {
      const command = copyOptions({ count: this._name }, options, ['maxTimeMS', 'comment']);
      return Number(this._db._run(command, true).n);
    }
    count(filter, options) {
      const command = copyOptions({ count: this._name, query: filter || {} }, options, ['limit', 'skip', 'hint', 'maxTimeMS', 'collation']);
      return Number(this._db._run(command, true).n);
    }
    distinct(key, filter, options) {
      const command = { distinct: this._name, key: String(key) };
      if (filter !== undefined) command.query = requireDocument(filter, 'filter');
      copyOptions(command, options, ['maxTimeMS', 'collation', 'comment']);
      return this._db._run(command, true).values;
    }
    _indexSpec(keys, options) {
      requireDocument(keys, 'index keys');
      const name = Object.keys(keys).map((key) => key + '_' + String(keys[key])).join('_');
      return Object.assign({ key: keys, name }, options || {});
    }
    createIndex(keys, options, commitQuorum) {
      return this.createIndexes([keys], options, commitQuorum)[0];
    }
    createIndexes(keyPatterns, options, commitQuorum) {
      if (!Array.isArray(keyPatterns)) throw new TypeError('createIndexes() takes an array of key patterns');
      const indexes = keyPatterns.map((keys) => this._indexSpec(keys, options));
      const command = { createIndexes: this._name, indexes };
      if (commitQuorum !== undefined) command.commitQuorum = commitQuorum;
      this._write(command);
      return indexes.map((index) => index.name);
    }
    ensureIndex(keys, options) { return this.createIndex(keys, options); }
    getIndexes() { return new Cursor(this, { listIndexes: this._name }, true).toArray(); }
    getIndexKeys() { return this.getIndexes().map((index) => index.key); }
    dropIndex(index) { return this._write({ dropIndexes: this._name, index }); }
    dropIndexes(indexes) { return this._write({ dropIndexes: this._name, index: indexes === undefined ? '*' : indexes }); }
    drop(options) {
      try {
        this._write(copyOptions({ drop: this._name }, options, ['writeConcern']));
        return true;
      } catch (error) {
        if (error.code === 26) return false;
        throw error;
      }
    }
    renameCollection(target, dropTarget) {
      return this._db.getSiblingDB('admin')._run({
        renameCollection: this.getFullName(), to: this._db._name + '.' + target, dropTarget: !!dropTarget,
      }, false);
    }
    stats() { return this._db._run({ collStats: this._name }, true); }
    getCollection(name) { return this._db.getCollection(this._name + '.' + name); }
  }

  function collectionProxy(collection) {
    return new Proxy(collection, {
      get(target, prop, receiver) {
        if (typeof prop !== 'string' || prop in target || prop.startsWith('_')) return Reflect.get(target, prop, receiver);
        return target.getCollection(prop);
      },
    });
  }

  // ---- databases ---------------------------------------------------------------------------------

  class DB {
    constructor(name) {
      define(this, '_name', name);
      define(this, '_proxy', null);
    }
    _run(command, isRead) { return native.runCommand(this._name, command, !!isRead); }
    getName() { return this._name; }
    toString() { return this._name; }
    getSiblingDB(name) { return databaseProxy(String(name)); }
    getMongo() { return mongo; }
    getCollection(name) {
      if (typeof name !== 'string' || name.length === 0) throw new TypeError('getCollection() takes a collection name');
      return collectionProxy(new Collection(this, name));
    }
    getCollectionInfos(filter, options) {
      const command = { listCollections: 1, filter: filter || {} };
      copyOptions(command, options, ['nameOnly', 'authorizedCollections']);
      return new Cursor(this.getCollection('$cmd.listCollections'), command, true).toArray();
    }
    getCollectionNames() { return this.getCollectionInfos({}, { nameOnly: true }).map((info) => info.name).sort(); }
    createCollection(name, options) { return this._run(Object.assign({ create: name }, options || {}), false); }
    dropDatabase(writeConcern) {
      const command = { dropDatabase: 1 };
      if (writeConcern !== undefined) command.writeConcern = writeConcern;
      return this._run(command, false);
    }
    runCommand(command, options) {
      if (typeof command === 'string') command = { [command]: 1 };
      requireDocument(command, 'a command');
      return this._run(command, !!(options && options.readPreference));
    }
    adminCommand(command) { return this.getSiblingDB('admin').runCommand(command); }
    aggregate(pipeline, options) {
      const command = { aggregate: 1, pipeline, cursor: {} };
      copyOptions(command, options, ['allowDiskUse', 'maxTimeMS', 'comment', 'let']);
      return new Cursor(this.getCollection('$cmd.aggregate'), command, true);
    }
    currentOp(filter) {
      let command = { currentOp: 1 };
      if (filter === true) command.$all = true;
      else if (filter !== undefined) command = Object.assign(command, filter);
      return this.adminCommand(command);
    }
    killOp(opid) { return this.adminCommand({ killOp: 1, op: opid }); }
    serverStatus(options) { return this.adminCommand(Object.assign({ serverStatus: 1 }, options || {})); }
    hostInfo() { return this.adminCommand({ hostInfo: 1 }); }
    version() { return this.adminCommand({ buildInfo: 1 }).version; }
    stats(scale) { return this._run(scale === undefined ? { dbStats: 1 } : { dbStats: 1, scale }, true); }
    fsyncLock() { return this.adminCommand({ fsync: 1, lock: true }); }
    fsyncUnlock() { return this.adminCommand({ fsyncUnlock: 1 }); }
    lockInfo() { return this.adminCommand({ lockInfo: 1 }); }
    hello() { return this.adminCommand({ hello: 1 }); }
    isMaster() { return this.hello(); }
    help() { print(DB_HELP); }
  }

  function databaseProxy(name) {
    const database = new DB(name);
    const proxy = new Proxy(database, {
      get(target, prop, receiver) {
        if (typeof prop !== 'string' || prop in target || prop.startsWith('_')) return Reflect.get(target, prop, receiver);
        return target.getCollection(prop);
      },
    });
    database._proxy = proxy;
    return proxy;
  }

  const mongo = {
    getDB(name) { return databaseProxy(String(name)); },
    getDBNames() { return native.runCommand('admin', { listDatabases: 1, nameOnly: true }, true).databases.map((d) => d.name); },
  };

  // ---- shell commands ----------------------------------------------------------------------------

  const DB_HELP = [
    'Database methods:',
    '  db.getName(), db.getSiblingDB(name), db.getCollection(name), db.getCollectionNames()',
    '  db.createCollection(name, options), db.dropDatabase(), db.runCommand(cmd), db.adminCommand(cmd)',
    '  db.aggregate(pipeline), db.currentOp(), db.killOp(opid), db.serverStatus(), db.fsyncLock(), db.fsyncUnlock()',
    'Collection methods (db.<coll>.<method>):',
    '  insertOne, insertMany, find, findOne, updateOne, updateMany, replaceOne, deleteOne, deleteMany,',
    '  findOneAndUpdate, findOneAndReplace, findOneAndDelete, aggregate, countDocuments,',
    '  estimatedDocumentCount, distinct, createIndex, createIndexes, getIndexes, dropIndex, dropIndexes, drop',
    'Cursor methods: sort, limit, skip, batchSize, project, toArray, forEach, map, hasNext, next, count, explain',
  ].join('\n');

  const HELP = [
    'Shell commands:',
    '  use <db>                 switch the current database',
    '  show dbs | databases     list databases',
    '  show collections | tables  list the collections of the current database',
    '  it                       show the next batch of the last cursor',
    '  exit | quit()            leave the shell',
    '  print(...), printjson(value), load(file.js), sleep(ms)',
    'BSON: ObjectId(), ISODate(), NumberLong(), NumberInt(), NumberDecimal(), Timestamp(), UUID(), BinData(), MinKey, MaxKey',
    'Type db.help() for database, collection and cursor methods.',
  ].join('\n');

  function formatSize(bytes) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
    return unit === 0 ? value + ' B' : value.toFixed(2) + ' ' + units[unit];
  }

  function use(name) {
    name = String(name);
    if (!/^[^\/\\. "$]+$/.test(name)) throw makeError('MongoshInvalidInputError', "invalid database name '" + name + "'");
    global.db = databaseProxy(name);
    return 'switched to db ' + name;
  }

  function show(what) {
    switch (what) {
      case 'dbs':
      case 'databases': {
        const databases = native.runCommand('admin', { listDatabases: 1 }, true).databases;
        const width = Math.max(0, ...databases.map((d) => d.name.length)) + 2;
        return databases.map((d) => d.name.padEnd(width) + formatSize(d.sizeOnDisk || 0)).join('\n');
      }
      case 'collections':
      case 'tables':
        return global.db.getCollectionNames().join('\n');
      default:
        throw makeError('MongoshInvalidInputError', "'show " + what + "' is not supported: try 'show dbs' or 'show collections'");
    }
  }

  let lastCursor = null;

  // What the REPL prints for a value: cursors show their next batch, strings from shell
  // commands are printed as they are.
  function display(value) {
    if (value instanceof Cursor) {
      lastCursor = value;
      const batch = value._shellBatch();
      let text = batch.length === 0 ? '' : native.inspect(batch);
      if (value.hasNext()) text += (text ? '\n' : '') + 'Type "it" for more';
      return text;
    }
    if (value instanceof DB) return value._name;
    if (value instanceof Collection) return value.getFullName();
    if (value === undefined) return undefined;
    return native.inspect(value);
  }

  function it() {
    if (lastCursor === null || lastCursor.isExhausted()) return 'no cursor';
    return display(lastCursor);
  }

  function print() {
    const parts = Array.prototype.map.call(arguments, (value) => (typeof value === 'string' ? value : native.inspect(value)));
    native.print(parts.join(' '));
  }

  function printjson(value) { native.print(native.inspect(value)); }

  Object.assign(global, {
    db: databaseProxy('test'),
    use, show, it, print, printjson,
    help: () => print(HELP),
    quit: (code) => native.quit(code === undefined ? 0 : Number(code)),
    exit: (code) => native.quit(code === undefined ? 0 : Number(code)),
    sleep: (ms) => native.sleep(Number(ms)),
    load: (path) => native.load(String(path)),
    tojson: (value) => native.inspect(value),
    __display: display,
    __DB: DB, __Collection: Collection, __Cursor: Cursor,
  });
})(globalThis);
