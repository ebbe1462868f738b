//! Alipay open platform (placeholder: being written).

use super::ProviderError;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct AlipayArgs {}

pub struct Alipay;

impl Alipay {
    pub fn from_args(_: &AlipayArgs, _: reqwest::Client) -> Result<Self, ProviderError> {
        Err(ProviderError::Config("alipay is not built yet".into()))
    }
}
