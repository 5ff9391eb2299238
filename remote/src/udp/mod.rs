//! UDP relaying, over both transports: UDP-over-TCP ([`tcp`], a tunnel command) and encrypted
//! UDP packets on the listener's port ([`packet`]), which share one NAT ([`nat`]).

pub mod nat;
pub mod packet;
pub mod tcp;
