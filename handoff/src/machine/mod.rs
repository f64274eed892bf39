//! The protocol roles as I/O-free state machines.
//!
//! Each machine is driven by a thin driver that does the I/O: the machine
//! says what to do next (an [`supervisor::Action`]: connect, read a frame
//! until a deadline, send a frame, spawn, write the journal, pass a crash
//! point, kill, finish) and is told what happened (an
//! [`supervisor::Input`]: a frame, a timeout, a closed peer, the result of
//! the action). Time enters only through the `now` of each input, so the
//! same machine runs under the library's drivers against real sockets and
//! under the harness's explorer against a modelled world, step for step.
//! The explorer drives this code, not a copy of it.

pub mod incumbent;
pub mod supervisor;
