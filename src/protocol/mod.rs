//! The RESP protocol: request framing, reply framing, the command table and proxy-built replies.
pub mod command;
pub mod framer;
mod inline;
pub mod keyspec;
pub mod reply;
pub mod reply_framer;
#[cfg(test)]
mod split_check;
