pub mod checker;
pub mod history;
pub mod workload;
