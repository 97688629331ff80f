//! One module per subcommand: its flags (a clap `Args` struct), their validation into the
//! library's settings (errors name the flag), and the `run` that hands off to the library.

pub mod admin;
pub mod bench;
pub mod client;
pub mod demo;
pub mod history;
pub mod local;
pub mod replica;
