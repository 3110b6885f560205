// Starts kinesalite (a Kinesis API stand-in) on 127.0.0.1 only — its own CLI binds every
// interface. Usage: node kinesalite.js PORT [LEVELDB_DIR]  (in-memory without a directory).
// Streams become ACTIVE at once so tests need not wait.
const kinesalite = require('kinesalite');
const [port, path] = process.argv.slice(2);
const options = { path, createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100000 };
// PORT 0 binds a free port; the line below reports the one bound.
const server = kinesalite(options);
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`kinesalite listening on 127.0.0.1:${server.address().port}`);
});
