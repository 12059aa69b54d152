//! Running one agent as a supervised subprocess: its scratch folder
//! ([`workdir`]), agents a dead worker left behind ([`orphans`]), how it is started ([`spawn`]), how its output is read and
//! streamed ([`output`]), and how it is waited on and stopped ([`supervise`]).

pub mod orphans;
pub mod output;
pub mod spawn;
pub mod supervise;
pub mod workdir;
