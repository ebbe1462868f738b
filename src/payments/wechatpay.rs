//! WeChat Pay API v3 (placeholder: being written).

use super::ProviderError;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct WechatPayArgs {}

pub struct WechatPay;

impl WechatPay {
    pub fn from_args(_: &WechatPayArgs, _: reqwest::Client) -> Result<Self, ProviderError> {
        Err(ProviderError::Config("wechatpay is not built yet".into()))
    }
}
