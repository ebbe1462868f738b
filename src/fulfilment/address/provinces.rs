//! The 34 province-level divisions of GB/T 2260, as data: what an address's
//! `province` and a product's `ships_to` may name. Shipped with the binary
//! rather than read from a table, so every node agrees and a test can prove
//! the list complete.

use serde::Serialize;

/// `(code, Chinese name, English name)`, in code order.
pub const PROVINCES: [(&str, &str, &str); 34] = [
    ("110000", "北京市", "Beijing"),
    ("120000", "天津市", "Tianjin"),
    ("130000", "河北省", "Hebei"),
    ("140000", "山西省", "Shanxi"),
    ("150000", "内蒙古自治区", "Inner Mongolia"),
    ("210000", "辽宁省", "Liaoning"),
    ("220000", "吉林省", "Jilin"),
    ("230000", "黑龙江省", "Heilongjiang"),
    ("310000", "上海市", "Shanghai"),
    ("320000", "江苏省", "Jiangsu"),
    ("330000", "浙江省", "Zhejiang"),
    ("340000", "安徽省", "Anhui"),
    ("350000", "福建省", "Fujian"),
    ("360000", "江西省", "Jiangxi"),
    ("370000", "山东省", "Shandong"),
    ("410000", "河南省", "Henan"),
    ("420000", "湖北省", "Hubei"),
    ("430000", "湖南省", "Hunan"),
    ("440000", "广东省", "Guangdong"),
    ("450000", "广西壮族自治区", "Guangxi"),
    ("460000", "海南省", "Hainan"),
    ("500000", "重庆市", "Chongqing"),
    ("510000", "四川省", "Sichuan"),
    ("520000", "贵州省", "Guizhou"),
    ("530000", "云南省", "Yunnan"),
    ("540000", "西藏自治区", "Xizang"),
    ("610000", "陕西省", "Shaanxi"),
    ("620000", "甘肃省", "Gansu"),
    ("630000", "青海省", "Qinghai"),
    ("640000", "宁夏回族自治区", "Ningxia"),
    ("650000", "新疆维吾尔自治区", "Xinjiang"),
    ("710000", "台湾省", "Taiwan"),
    ("810000", "香港特别行政区", "Hong Kong"),
    ("820000", "澳门特别行政区", "Macao"),
];

/// One entry of [`PROVINCES`], as `GET /api/v1/provinces` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Province {
    pub code: &'static str,
    pub zh: &'static str,
    pub en: &'static str,
}

/// The province of this exact code (six ASCII digits ending in `0000`).
pub fn province(code: &str) -> Option<Province> {
    PROVINCES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(code, zh, en)| Province { code, zh, en })
}

/// Every province, in code order.
pub fn all() -> impl Iterator<Item = Province> {
    PROVINCES
        .iter()
        .map(|&(code, zh, en)| Province { code, zh, en })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_complete() {
        // 4 municipalities, 23 provinces (Taiwan included), 5 autonomous
        // regions, 2 SARs.
        let expected = [
            "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000",
            "310000", "320000", "330000", "340000", "350000", "360000", "370000", "410000",
            "420000", "430000", "440000", "450000", "460000", "500000", "510000", "520000",
            "530000", "540000", "610000", "620000", "630000", "640000", "650000", "710000",
            "810000", "820000",
        ];
        assert_eq!(PROVINCES.len(), 34);
        let codes: Vec<&str> = PROVINCES.iter().map(|p| p.0).collect();
        assert_eq!(codes, expected, "all 34 codes, in code order");
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 34, "codes are unique");
        for (code, zh, en) in PROVINCES {
            assert!(
                code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
                "{code}"
            );
            assert!(code.ends_with("0000"), "{code} is province-level");
            assert!(!zh.is_empty() && !en.is_empty(), "{code} has both names");
        }
        let zh: std::collections::HashSet<_> = PROVINCES.iter().map(|p| p.1).collect();
        let en: std::collections::HashSet<_> = PROVINCES.iter().map(|p| p.2).collect();
        assert_eq!((zh.len(), en.len()), (34, 34), "names are unique");
        assert_eq!(province("110000").map(|p| p.en), Some("Beijing"));
        assert_eq!(province("440000").map(|p| p.zh), Some("广东省"));
        assert_eq!(province("710000").map(|p| p.en), Some("Taiwan"));
        assert_eq!(province("810000").map(|p| p.en), Some("Hong Kong"));
        assert_eq!(province("820000").map(|p| p.en), Some("Macao"));
        assert_eq!(all().count(), 34);
    }

    #[test]
    fn only_exact_codes_are_provinces() {
        for code in [
            "",
            "44",
            "44000",
            "4400000",
            "440001",
            "440100",
            "999999",
            "000000",
            " 440000",
            "440000 ",
            "４４００００",
        ] {
            assert_eq!(province(code), None, "{code:?}");
        }
    }
}
