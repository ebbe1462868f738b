//! Fulfilment: where an order ships (the buyer's address book, a product's
//! delivery areas) and how it gets there (packing, shipments, delivery).

pub mod address;
