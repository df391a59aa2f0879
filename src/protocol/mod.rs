//! The RESP protocol: request framing, reply framing, the command table and proxy-built replies.
pub mod command;
pub mod framer;
pub mod keyspec;
pub mod reply_framer;
