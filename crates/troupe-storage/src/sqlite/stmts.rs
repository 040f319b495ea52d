//! The writer connection, with its hot statements kept prepared across transactions.
//!
//! rusqlite's `prepare_cached` is an LRU keyed by the SQL text: each use hashes the text twice,
//! allocates an `Arc<str>` key, moves a node out of and back into a linked hash map and clears
//! the bindings (~1.6k instructions per use, ~3 uses per handled queue request: ~4% of it).
//! The writes on the writer thread use a handful of statements whose SQL is a `&'static str`,
//! so [`with_stmt`] finds them by the text's address in a short list instead, prepared once for
//! the life of the connection.
//!
//! A statement borrows its connection, so the list must live beside the connection it was
//! prepared on and go before it: [`Writer`] owns both, keeps the connection in a heap
//! allocation of its own that is never moved and never handed out as `&mut` (every user of the
//! writer gets `&Connection`; transactions start with `Transaction::new_unchecked`), and
//! finalizes the statements before closing the connection.

use std::cell::{Cell, RefCell, RefMut};
use std::ops::Deref;
use std::ptr::NonNull;

use rusqlite::{Connection, PrepFlags, Statement};

/// The writer connection and the statements prepared on it by [`with_stmt`].
pub(crate) struct Writer {
    /// Declared before `conn` only for the reader: `Drop` finalizes them first explicitly.
    /// Boxed: a slot in use stays where it is while a nested use adds another to the list.
    #[allow(clippy::vec_box)]
    hot: RefCell<Vec<Box<Slot>>>,
    /// From `Box::into_raw`, freed in `Drop`; only ever shared (`&Connection`), so the
    /// `&'static Connection` inside the statements never aliases a `&mut`.
    conn: NonNull<Connection>,
}

struct Slot {
    sql: &'static str,
    /// `None` once a use of it panicked (the statement may be left mid-step).
    stmt: RefCell<Option<Statement<'static>>>,
}

// SAFETY: the connection and its statements move between threads together (the writer is
// behind a mutex), never used from two threads at once; SQLite connections and statements
// may be used from any thread one at a time (rusqlite's own statement cache is `Send` the same
// way).
unsafe impl Send for Writer {}

impl Writer {
    pub(crate) fn new(conn: Connection) -> Self {
        Writer {
            hot: RefCell::new(Vec::new()),
            conn: NonNull::from(Box::leak(Box::new(conn))),
        }
    }

    /// Runs `f` with this writer's statements available to [`with_stmt`] on this thread.
    pub(crate) fn with_hot<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        struct Restore(*const Writer);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self as *const Writer)));
        f(self)
    }

    /// Statements currently prepared (for tests).
    #[cfg(test)]
    pub(crate) fn hot_len(&self) -> usize {
        self.hot.borrow().len()
    }
}

impl Deref for Writer {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // SAFETY: `conn` is valid until `Drop` and only ever shared.
        unsafe { self.conn.as_ref() }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A connection with statements left open cannot close.
        self.hot.get_mut().clear();
        // SAFETY: from `Box::leak` in `new`; the statements borrowing it are gone.
        drop(unsafe { Box::from_raw(self.conn.as_ptr()) });
    }
}

thread_local! {
    /// The writer whose `with_hot` is running on this thread, if any.
    static CURRENT: Cell<*const Writer> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` on the statement for `sql` on `conn`: the writer's kept statement when `conn` is
/// the connection of the writer whose [`Writer::with_hot`] is running on this thread (and
/// that statement is not in use further up the stack), else rusqlite's cached one.
pub(crate) fn with_stmt<T>(
    conn: &Connection,
    sql: &'static str,
    f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let writer = CURRENT.with(Cell::get);
    // SAFETY: `CURRENT` is set only while `with_hot` borrows the writer, further up this
    // thread's stack, so it is alive (and not mutably borrowed) here.
    let writer = match unsafe { writer.as_ref() } {
        Some(w) if std::ptr::eq(w.conn.as_ptr(), conn) => w,
        _ => return f(&mut *conn.prepare_cached(sql)?),
    };
    let slot = match find(writer, sql) {
        Some(slot) => slot,
        None => {
            let conn: &'static Connection = {
                // SAFETY: the statement is stored in `writer.hot`, which is emptied before
                // the connection is freed (`Drop`), so this borrow outlives its uses.
                unsafe { &*writer.conn.as_ptr() }
            };
            let stmt = conn.prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)?;
            let mut hot = writer.hot.borrow_mut();
            hot.push(Box::new(Slot {
                sql,
                stmt: RefCell::new(Some(stmt)),
            }));
            let slot: *const Slot = &**hot.last().expect("just pushed");
            // SAFETY: as in `find`.
            unsafe { &*slot }
        }
    };
    let Ok(stmt) = slot.stmt.try_borrow_mut() else {
        // The same statement is in use further up the stack (a nested use of the same SQL).
        return f(&mut *conn.prepare_cached(sql)?);
    };
    struct Use<'a>(RefMut<'a, Option<Statement<'static>>>);
    impl Drop for Use<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.take();
            }
        }
    }
    let mut stmt = Use(stmt);
    match stmt.0.as_mut() {
        Some(stmt) => f(stmt),
        None => f(&mut *conn.prepare_cached(sql)?),
    }
}

/// The writer's slot for `sql` (by the text's address), if prepared.
fn find<'w>(writer: &'w Writer, sql: &'static str) -> Option<&'w Slot> {
    let hot = writer.hot.borrow();
    let slot: *const Slot = &**hot
        .iter()
        .find(|s| s.sql.as_ptr() == sql.as_ptr() && s.sql.len() == sql.len())?;
    // SAFETY: slots are boxed (a push that moves the list does not move them) and are freed
    // only when the writer drops, which cannot happen while `with_hot` borrows it; the
    // returned reference is used only within the `with_stmt` call that found it.
    Some(unsafe { &*slot })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    const INSERT: &str = "INSERT INTO t (v) VALUES (?1)";
    const COUNT: &str = "SELECT count(*) FROM t";

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        Writer::new(conn)
    }

    fn runs(stmt: &Statement<'_>) -> i32 {
        stmt.get_status(StatementStatus::Run)
    }

    #[test]
    fn statements_are_prepared_once_per_writer() {
        let w = writer();
        for round in 1..=3 {
            let run = w.with_hot(|conn| {
                let tx = rusqlite::Transaction::new_unchecked(
                    conn,
                    rusqlite::TransactionBehavior::Immediate,
                )
                .unwrap();
                let run = with_stmt(&tx, INSERT, |s| {
                    s.execute([round])?;
                    Ok(runs(s))
                })
                .unwrap();
                tx.commit().unwrap();
                run
            });
            // The same statement each time: it counts every run since it was prepared.
            assert_eq!(run, round);
        }
        assert_eq!(w.hot_len(), 1);
        let n: i64 = w
            .with_hot(|conn| with_stmt(conn, COUNT, |s| s.query_row([], |r| r.get(0))))
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(w.hot_len(), 2);
    }

    #[test]
    fn dropping_the_writer_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        // The connection keeps its write lock until it closes.
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; CREATE TABLE t (v INTEGER)")
            .unwrap();
        let w = Writer::new(conn);
        w.with_hot(|conn| with_stmt(conn, INSERT, |s| s.execute([1])))
            .unwrap();
        assert_eq!(w.hot_len(), 1);
        // SQLite cannot close a connection with statements left (rusqlite then leaves it
        // open, silently): they must be finalized first.
        drop(w);
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        other.execute(INSERT, [2]).unwrap();
    }

    #[test]
    fn outside_with_hot_and_on_other_connections_rusqlite_caches() {
        let w = writer();
        with_stmt(&w, INSERT, |s| s.execute([1])).unwrap();
        assert_eq!(w.hot_len(), 0);
        let other = Connection::open_in_memory().unwrap();
        other.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        w.with_hot(|_| with_stmt(&other, INSERT, |s| s.execute([2])))
            .unwrap();
        assert_eq!(w.hot_len(), 0);
        let n: i64 = other.query_row(COUNT, [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        // And `CURRENT` is back to none after `with_hot`.
        with_stmt(&w, INSERT, |s| s.execute([3])).unwrap();
        assert_eq!(w.hot_len(), 0);
    }

    #[test]
    fn nested_uses_of_one_statement_and_many_statements() {
        let w = writer();
        w.with_hot(|conn| {
            with_stmt(conn, INSERT, |s| {
                s.execute([1])?;
                // The same SQL further down: served by rusqlite's cache.
                with_stmt(conn, INSERT, |inner| inner.execute([2]))?;
                // Others are added to the list while a slot is in use.
                for sql in ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5"] {
                    with_stmt(conn, sql, |q| q.query_row([], |r| r.get::<_, i64>(0)))?;
                }
                s.execute([3])
            })
        })
        .unwrap();
        assert_eq!(w.hot_len(), 6);
        let n: i64 = w.query_row(COUNT, [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn a_statement_whose_use_panicked_is_not_reused() {
        let w = writer();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.with_hot(|conn| {
                with_stmt(conn, "SELECT v FROM t", |s| -> rusqlite::Result<()> {
                    let mut rows = s.query([])?;
                    let _ = rows.next()?;
                    panic!("a write panicked mid-statement");
                })
            })
        }));
        assert!(panicked.is_err());
        w.execute(INSERT, [7]).unwrap();
        let v: i64 = w
            .with_hot(|conn| with_stmt(conn, "SELECT v FROM t", |s| s.query_row([], |r| r.get(0))))
            .unwrap();
        assert_eq!(v, 7);
    }
}
