//! Deterministic seed data of the sandbox: a small fictional country ("Govland") of households, persons,
//! births, farmers, social-registry entries and trade licences, all derived from one `u64` seed.
//! It must never read a clock or an OS random source: the same seed always yields the same data, so tests
//! and demos can name "a verified mother" or "a farmer without a bank account" and get the same person.
//!
//! Leaves out: addresses beyond a district, marriages and migrations, non-ASCII names, and any realism
//! of income distributions beyond plausible ranges.

use chrono::{Datelike, Duration as Days, Months, NaiveDate};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The date the seed data is "as of": ages and "recent" births are computed against it, never the clock.
pub const SEED_REFERENCE_DATE: &str = "2025-06-30";

fn reference_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default()
}

/// SplitMix64: a tiny, well-distributed PRNG; enough for seed data and deterministic ids.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from(hi - lo).unwrap_or(0).saturating_add(1);
        lo + i64::try_from(self.below(span)).unwrap_or(0)
    }

    fn chance(&mut self, p: f64) -> bool {
        unit(self.next_u64()) < p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let n = u64::try_from(items.len()).unwrap_or(0);
        let i = usize::try_from(self.below(n)).unwrap_or(0);
        items.get(i).copied().unwrap_or("")
    }
}

/// The SplitMix64 finaliser; also used to derive per-request fault decisions from a counter.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps 64 random bits to `[0, 1)`.
pub(crate) fn unit(bits: u64) -> f64 {
    // 53 significant bits: exact in an f64.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

const DISTRICTS: &[&str] =
    &["Northfield", "Lakeside", "Riverbend", "Hillcrest", "Eastmoor", "Westvale", "Southport", "Greenvalley"];

const FEMALE_NAMES: &[&str] = &[
    "Amina", "Grace", "Fatima", "Maria", "Aisha", "Esther", "Nadia", "Lina", "Sofia", "Priya", "Mei",
    "Chloe", "Hana", "Zainab", "Ruth", "Leila", "Ana", "Joy", "Mercy", "Ines", "Sara", "Elena", "Nia",
    "Olga", "Rosa", "Yara", "Asha", "Clara", "Divya", "Eva",
];

const MALE_NAMES: &[&str] = &[
    "John", "Ahmed", "David", "Carlos", "Samuel", "Ivan", "Kofi", "Ravi", "Omar", "Peter", "Lucas", "Daniel",
    "Tariq", "Joseph", "Mateo", "Kenji", "Musa", "Felix", "Hassan", "Leo", "Arjun", "Emeka", "Tomas",
    "Yusuf", "Paul", "Mark", "Noah", "Elias", "Juma", "Victor",
];

const LAST_NAMES: &[&str] = &[
    "Okafor", "Mensah", "Haddad", "Silva", "Nguyen", "Kowalski", "Mwangi", "Patel", "Garcia", "Smith",
    "Banda", "Ibrahim", "Novak", "Rossi", "Tanaka", "Achieng", "Diallo", "Hussein", "Petrov", "Lopez",
    "Kamau", "Osei", "Farouk", "Moreno", "Chen", "Abebe", "Sato", "Kim", "Nkosi", "Ferreira", "Otieno",
    "Suleiman", "Varga", "Bakr", "Dube", "Santos", "Kariuki", "Mendes", "Yilmaz", "Boateng",
];

const CROPS: &[&str] = &["maize", "cassava", "rice", "beans", "coffee", "sorghum", "vegetables"];
const ACTIVITIES: &[&str] = &["retail", "food service", "transport", "tailoring", "hardware", "pharmacy"];

/// A person of the population register. Every person can authenticate at the simulated Identity BB
/// unless `deceased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// 10 digits, the last a Luhn check digit.
    pub national_id: String,
    pub first_name: String,
    pub last_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `"female"` or `"male"` (the OIDC `gender` claim values).
    pub gender: String,
    /// E.164 with the fictional country code +999; children have none.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub district: String,
    pub deceased: bool,
}

impl Person {
    /// Age in whole years at [`SEED_REFERENCE_DATE`].
    pub fn age(&self) -> i32 {
        NaiveDate::parse_from_str(&self.birth_date, "%Y-%m-%d")
            .map(|birth| age_at(birth, reference_date()))
            .unwrap_or(0)
    }

    fn record(&self) -> Value {
        json!({
            "ID": self.national_id,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "birthDate": self.birth_date,
            "gender": self.gender,
            "phone": self.phone,
            "email": self.email,
            "district": self.district,
            "deceased": self.deceased,
        })
    }
}

/// A birth of the civil register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BirthRecord {
    /// `BC-YYYY-NNNNN`; also the record's `ID`.
    pub certificate_number: String,
    pub child_national_id: String,
    pub child_first_name: String,
    pub child_last_name: String,
    pub birth_date: String,
    pub gender: String,
    pub mother_id: String,
    pub father_id: Option<String>,
    pub place_of_birth: String,
    pub registration_date: String,
}

impl BirthRecord {
    fn record(&self) -> Value {
        json!({
            "ID": self.certificate_number,
            "certificateNumber": self.certificate_number,
            "childNationalId": self.child_national_id,
            "childFirstName": self.child_first_name,
            "childLastName": self.child_last_name,
            "birthDate": self.birth_date,
            "gender": self.gender,
            "motherId": self.mother_id,
            "fatherId": self.father_id,
            "placeOfBirth": self.place_of_birth,
            "registrationDate": self.registration_date,
        })
    }
}

/// A farmer of the farmer register (a person of the population register).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Farmer {
    /// `FR-NNNNN`.
    pub id: String,
    pub national_id: String,
    pub first_name: String,
    pub last_name: String,
    pub district: String,
    pub farm_size_ha: f64,
    pub main_crop: String,
    /// 12 digits; `None` for farmers without a bank account (not registered in the Payments ID mapper).
    pub bank_account: Option<String>,
    pub household_size: u32,
    pub annual_income: u32,
    /// `"none" | "low" | "moderate" | "severe"` (crop damage of the last season).
    pub damage_level: String,
}

impl Farmer {
    fn record(&self) -> Value {
        json!({
            "ID": self.id,
            "nationalId": self.national_id,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "district": self.district,
            "farmSizeHa": self.farm_size_ha,
            "mainCrop": self.main_crop,
            "bankAccount": self.bank_account,
            "householdSize": self.household_size,
            "annualIncome": self.annual_income,
            "damageLevel": self.damage_level,
        })
    }
}

/// A household of the social registry, keyed by its registrant's national id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Household {
    /// `HH-NNNNN`.
    pub id: String,
    /// The registrant: the mother where there is one, else the eldest member.
    pub national_id: String,
    pub member_ids: Vec<String>,
    pub district: String,
    pub household_size: u32,
    pub monthly_income: u32,
    /// e.g. `"maternal-support"`, `"senior-pension"`; empty when registered but not enrolled.
    pub programmes: Vec<String>,
}

impl Household {
    fn record(&self) -> Value {
        json!({
            "ID": self.id,
            "nationalId": self.national_id,
            "memberIds": self.member_ids,
            "district": self.district,
            "householdSize": self.household_size,
            "monthlyIncome": self.monthly_income,
            "programmes": self.programmes,
            "enrolled": !self.programmes.is_empty(),
        })
    }
}

/// A trade licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Licence {
    /// `TL-YYYY-NNNN`.
    pub id: String,
    pub holder_national_id: String,
    pub holder_name: String,
    pub business_name: String,
    pub activity: String,
    pub district: String,
    pub issue_date: String,
    pub expiry_date: String,
    /// `"active"` or `"expired"` at [`SEED_REFERENCE_DATE`].
    pub status: String,
}

impl Licence {
    fn record(&self) -> Value {
        json!({
            "ID": self.id,
            "holderNationalId": self.holder_national_id,
            "holderName": self.holder_name,
            "businessName": self.business_name,
            "activity": self.activity,
            "district": self.district,
            "issueDate": self.issue_date,
            "expiryDate": self.expiry_date,
            "status": self.status,
        })
    }
}

/// Indexes of the people tests ask for by role, fixed at generation.
///
/// # Invariants
/// Every index is in bounds of its vector, and the person or farmer it points to has the role's
/// properties (see the accessor docs). Fields of [`SeedData`] are private so this cannot be broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Roles {
    verified_mother: usize,
    mother_birth: usize,
    deceased: usize,
    farmer_with_account: usize,
    farmer_without_account: usize,
}

/// The deterministic data a sandbox starts with. Equal seeds give equal data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedData {
    seed: u64,
    reference_date: String,
    persons: Vec<Person>,
    births: Vec<BirthRecord>,
    farmers: Vec<Farmer>,
    households: Vec<Household>,
    licences: Vec<Licence>,
    unknown_national_ids: Vec<String>,
    #[serde(skip)]
    roles: Roles,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Family,
    SingleMother,
    Elderly,
    SingleAdult,
}

const N_HOUSEHOLDS: usize = 110;
const N_LICENCES: usize = 6;

struct Builder {
    rng: Rng,
    ids: BTreeSet<String>,
    persons: Vec<Person>,
    births: Vec<BirthRecord>,
    today: NaiveDate,
}

impl Builder {
    fn national_id(&mut self) -> String {
        loop {
            let body = format!("{}{:08}", self.rng.range(1, 9), self.rng.below(100_000_000));
            let id = format!("{body}{}", luhn_digit(&body));
            if self.ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn birth_date_for_age(&mut self, age: i64) -> NaiveDate {
        // Somewhere within the year of life `age`: after the day `age + 1` years before today, on or
        // before the day `age` years before today.
        let months = u32::try_from((age + 1) * 12).unwrap_or(0);
        let start = self.today.checked_sub_months(Months::new(months)).unwrap_or(self.today);
        let latest =
            self.today.checked_sub_months(Months::new(months.saturating_sub(12))).unwrap_or(self.today);
        let span = (latest - start).num_days();
        start + Days::days(self.rng.range(1, span.max(1)))
    }

    fn person(&mut self, gender: &str, last_name: &str, age: i64, district: &str) -> usize {
        let first_name =
            if gender == "female" { self.rng.pick(FEMALE_NAMES) } else { self.rng.pick(MALE_NAMES) };
        let national_id = self.national_id();
        let birth = self.birth_date_for_age(age);
        let adult = age >= 16;
        let phone = adult.then(|| format!("+9997{:08}", self.rng.below(100_000_000)));
        let email = (adult && self.rng.chance(0.7)).then(|| {
            format!(
                "{}.{}{}@mail.example",
                first_name.to_lowercase(),
                last_name.to_lowercase(),
                self.rng.below(100)
            )
        });
        self.persons.push(Person {
            national_id,
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            birth_date: birth.format("%Y-%m-%d").to_string(),
            gender: gender.to_string(),
            phone,
            email,
            district: district.to_string(),
            deceased: false,
        });
        self.persons.len() - 1
    }

    fn gender(&mut self) -> &'static str {
        if self.rng.chance(0.5) {
            "female"
        } else {
            "male"
        }
    }

    /// A child of `mother` (and `father`), with its birth registered.
    fn child(&mut self, mother: usize, father: Option<usize>, age: i64, district: &str) -> usize {
        let last_name = self.persons[mother].last_name.clone();
        let gender = self.gender();
        let child = self.person(gender, &last_name, age, district);
        let birth =
            NaiveDate::parse_from_str(&self.persons[child].birth_date, "%Y-%m-%d").unwrap_or(self.today);
        let registered = (birth + Days::days(self.rng.range(1, 60))).min(self.today);
        let certificate_number = format!("BC-{}-{:05}", birth.year(), self.births.len() + 1);
        self.births.push(BirthRecord {
            certificate_number,
            child_national_id: self.persons[child].national_id.clone(),
            child_first_name: self.persons[child].first_name.clone(),
            child_last_name: last_name,
            birth_date: self.persons[child].birth_date.clone(),
            gender: gender.to_string(),
            mother_id: self.persons[mother].national_id.clone(),
            father_id: father.map(|f| self.persons[f].national_id.clone()),
            place_of_birth: district.to_string(),
            registration_date: registered.format("%Y-%m-%d").to_string(),
        });
        child
    }
}

impl SeedData {
    /// Generates the data for `seed`: about 300 persons in 110 households, their births, ~70 farmers,
    /// the social registry and a few licences.
    pub fn generate(seed: u64) -> SeedData {
        let today = reference_date();
        let mut b = Builder {
            rng: Rng::new(seed ^ 0x5EED_DA7A_0000_0001),
            ids: BTreeSet::new(),
            persons: Vec::new(),
            births: Vec::new(),
            today,
        };
        let mut households = Vec::new();
        let mut farmers = Vec::new();
        // (household index, mother person index) for households that have a mother.
        let mut mothers: Vec<(usize, usize)> = Vec::new();

        for h in 0..N_HOUSEHOLDS {
            let district = b.rng.pick(DISTRICTS).to_string();
            let last_name = b.rng.pick(LAST_NAMES).to_string();
            let kind = match b.rng.below(100) {
                0..=54 => Kind::Family,
                55..=69 => Kind::SingleMother,
                70..=84 => Kind::Elderly,
                _ => Kind::SingleAdult,
            };
            let mut members: Vec<usize> = Vec::new();
            let registrant;
            let mut farmer_candidate = None;
            let mut youngest_child = None;
            match kind {
                Kind::Family | Kind::SingleMother => {
                    let mother_age =
                        if kind == Kind::Family { b.rng.range(19, 44) } else { b.rng.range(18, 40) };
                    let mother = b.person("female", &last_name, mother_age, &district);
                    members.push(mother);
                    let father = if kind == Kind::Family {
                        let age = (mother_age + b.rng.range(-2, 8)).clamp(20, 70);
                        let father = b.person("male", &last_name, age, &district);
                        members.push(father);
                        Some(father)
                    } else {
                        None
                    };
                    let max_child_age = (mother_age - 18).clamp(0, 17);
                    let n_children = if kind == Kind::Family { b.rng.range(0, 3) } else { b.rng.range(1, 2) };
                    for c in 0..n_children {
                        // One in four mothers has a child born in the last year (postpartum journeys).
                        let age =
                            if c == 0 && b.rng.chance(0.25) { 0 } else { b.rng.range(0, max_child_age) };
                        let child = b.child(mother, father, age, &district);
                        members.push(child);
                        youngest_child = Some(youngest_child.map_or(age, |y: i64| y.min(age)));
                    }
                    registrant = Some(mother);
                    farmer_candidate = Some(father.unwrap_or(mother));
                    mothers.push((households.len(), mother));
                }
                Kind::Elderly => {
                    let n = b.rng.range(1, 2);
                    for _ in 0..n {
                        let gender = b.gender();
                        let age = b.rng.range(62, 90);
                        let p = b.person(gender, &last_name, age, &district);
                        if b.rng.chance(0.2) {
                            b.persons[p].deceased = true;
                        }
                        members.push(p);
                    }
                    registrant = members.first().copied();
                    if b.rng.chance(0.3) {
                        farmer_candidate = members.first().copied();
                    }
                }
                Kind::SingleAdult => {
                    let gender = b.gender();
                    let age = b.rng.range(18, 60);
                    let p = b.person(gender, &last_name, age, &district);
                    members.push(p);
                    registrant = Some(p);
                    farmer_candidate = Some(p);
                }
            }
            let Some(registrant) = registrant else {
                continue;
            };
            let size = u32::try_from(members.len()).unwrap_or(1);
            let monthly_income = match kind {
                Kind::Elderly => b.rng.range(40, 300),
                _ => b.rng.range(60, 900),
            };
            let mut programmes = Vec::new();
            // Maternal support is for mothers of young children; most of them are enrolled.
            if youngest_child.is_some_and(|age| age < 5) && b.rng.chance(0.7) {
                programmes.push("maternal-support".to_string());
            }
            if kind == Kind::Elderly && b.rng.chance(0.5) {
                programmes.push("senior-pension".to_string());
            }
            households.push(Household {
                id: format!("HH-{:05}", h + 1),
                national_id: b.persons[registrant].national_id.clone(),
                member_ids: members.iter().map(|&m| b.persons[m].national_id.clone()).collect(),
                district: district.clone(),
                household_size: size,
                monthly_income: u32::try_from(monthly_income).unwrap_or(0),
                programmes,
            });
            if let Some(f) = farmer_candidate {
                if !b.persons[f].deceased && b.rng.chance(0.6) {
                    let damage = match b.rng.below(100) {
                        0..=39 => "none",
                        40..=64 => "low",
                        65..=84 => "moderate",
                        _ => "severe",
                    };
                    let bank_account =
                        b.rng.chance(0.75).then(|| format!("{:012}", b.rng.below(1_000_000_000_000)));
                    let person = &b.persons[f];
                    farmers.push(Farmer {
                        id: String::new(),
                        national_id: person.national_id.clone(),
                        first_name: person.first_name.clone(),
                        last_name: person.last_name.clone(),
                        district: district.clone(),
                        farm_size_ha: 0.0,
                        main_crop: String::new(),
                        bank_account,
                        household_size: size,
                        annual_income: 0,
                        damage_level: damage.to_string(),
                    });
                    let n = farmers.len();
                    let size_tenths = b.rng.range(3, 80);
                    let income = b.rng.range(300, 6000);
                    let crop = b.rng.pick(CROPS).to_string();
                    if let Some(farmer) = farmers.last_mut() {
                        farmer.id = format!("FR-{n:05}");
                        farmer.farm_size_ha = size_tenths as f64 / 10.0;
                        farmer.annual_income = u32::try_from(income).unwrap_or(0);
                        farmer.main_crop = crop;
                    }
                }
            }
        }

        let mut licences = Vec::new();
        for n in 0..N_LICENCES {
            // Any living adult of working age.
            let adults: Vec<usize> = (0..b.persons.len())
                .filter(|&i| !b.persons[i].deceased && (18..=65).contains(&b.persons[i].age()))
                .collect();
            let pick = usize::try_from(b.rng.below(u64::try_from(adults.len()).unwrap_or(0))).unwrap_or(0);
            let Some(&holder) = adults.get(pick) else {
                break;
            };
            let issued = today - Days::days(b.rng.range(30, 900));
            let expired = n == N_LICENCES - 1;
            let expiry =
                if expired { today - Days::days(b.rng.range(1, 20)) } else { issued + Days::days(3 * 365) };
            let person = &b.persons[holder];
            licences.push(Licence {
                id: format!("TL-{}-{:04}", issued.year(), n + 1),
                holder_national_id: person.national_id.clone(),
                holder_name: format!("{} {}", person.first_name, person.last_name),
                business_name: format!(
                    "{} {}",
                    person.last_name,
                    b.rng.pick(&["General Store", "Traders", "& Sons", "Services"])
                ),
                activity: b.rng.pick(ACTIVITIES).to_string(),
                district: person.district.clone(),
                issue_date: issued.format("%Y-%m-%d").to_string(),
                expiry_date: expiry.format("%Y-%m-%d").to_string(),
                status: if expired { "expired" } else { "active" }.to_string(),
            });
        }

        let roles = fix_roles(&mut b, &mut households, &mut farmers, &mothers);

        let mut unknown_national_ids = Vec::new();
        while unknown_national_ids.len() < 5 {
            // Well-formed (valid check digit) but never issued.
            unknown_national_ids.push(b.national_id());
        }

        SeedData {
            seed,
            reference_date: SEED_REFERENCE_DATE.to_string(),
            persons: b.persons,
            births: b.births,
            farmers,
            households,
            licences,
            unknown_national_ids,
            roles,
        }
    }

    /// The seed this data was generated from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every person of the population register (children included; deceased persons flagged).
    pub fn persons(&self) -> &[Person] {
        &self.persons
    }

    /// Every birth of the civil register.
    pub fn births(&self) -> &[BirthRecord] {
        &self.births
    }

    /// Every farmer of the farmer register.
    pub fn farmers(&self) -> &[Farmer] {
        &self.farmers
    }

    /// Every household of the social registry.
    pub fn households(&self) -> &[Household] {
        &self.households
    }

    /// Every trade licence.
    pub fn licences(&self) -> &[Licence] {
        &self.licences
    }

    /// The person with this national id, if any.
    pub fn person(&self, national_id: &str) -> Option<&Person> {
        self.persons.iter().find(|p| p.national_id == national_id)
    }

    /// The social-registry household whose registrant has this national id, if any.
    pub fn household_of(&self, national_id: &str) -> Option<&Household> {
        self.households.iter().find(|h| h.national_id == national_id)
    }

    /// The farmer with this national id, if any.
    pub fn farmer(&self, national_id: &str) -> Option<&Farmer> {
        self.farmers.iter().find(|f| f.national_id == national_id)
    }

    /// A living woman aged 18–45 who authenticates at Identity, has at least one child in the civil
    /// register, and whose household is enrolled in `maternal-support` in the social registry.
    pub fn verified_mother(&self) -> &Person {
        &self.persons[self.roles.verified_mother]
    }

    /// A birth already in the civil register and its (living) mother: registering it again is a duplicate.
    pub fn registered_birth(&self) -> (&Person, &BirthRecord) {
        let birth = &self.births[self.roles.mother_birth];
        (&self.persons[self.roles.verified_mother], birth)
    }

    /// A person flagged deceased: Identity answers `access_denied` for them.
    pub fn deceased_person(&self) -> &Person {
        &self.persons[self.roles.deceased]
    }

    /// Well-formed national ids (valid check digit) that no register knows.
    pub fn unknown_national_ids(&self) -> &[String] {
        &self.unknown_national_ids
    }

    /// One well-formed national id that no register knows.
    pub fn unknown_national_id(&self) -> &str {
        self.unknown_national_ids.first().map(String::as_str).unwrap_or("0000000000")
    }

    /// A farmer with a bank account, registered as beneficiary in the Payments ID mapper.
    pub fn farmer_with_bank_account(&self) -> &Farmer {
        &self.farmers[self.roles.farmer_with_account]
    }

    /// A farmer without a bank account: a payment to their national id fails.
    pub fn farmer_without_bank_account(&self) -> &Farmer {
        &self.farmers[self.roles.farmer_without_account]
    }

    /// The records of every seeded registry, by registry name.
    pub(crate) fn registry_records(&self) -> Vec<(&'static str, Vec<Value>)> {
        vec![
            ("population-register", self.persons.iter().map(Person::record).collect()),
            ("civil-register", self.births.iter().map(BirthRecord::record).collect()),
            ("farmer-register", self.farmers.iter().map(Farmer::record).collect()),
            ("social-registry", self.households.iter().map(Household::record).collect()),
            ("licences", self.licences.iter().map(Licence::record).collect()),
        ]
    }
}

/// Makes sure every role exists whatever the seed, nudging the data where chance left a role empty.
fn fix_roles(
    b: &mut Builder,
    households: &mut Vec<Household>,
    farmers: &mut Vec<Farmer>,
    mothers: &[(usize, usize)],
) -> Roles {
    // A mother with a registered birth; prefer one already enrolled.
    let with_birth: Vec<(usize, usize)> = mothers
        .iter()
        .copied()
        .filter(|&(_, m)| {
            let p = &b.persons[m];
            !p.deceased
                && (18..=45).contains(&p.age())
                && b.births.iter().any(|br| br.mother_id == p.national_id)
        })
        .collect();
    let enrolled = with_birth.iter().copied().find(|&(h, _)| {
        households.get(h).is_some_and(|hh| hh.programmes.iter().any(|p| p == "maternal-support"))
    });
    let (household, mother) = match enrolled.or_else(|| with_birth.first().copied()) {
        Some(found) => found,
        None => {
            // No mother with a child at all (a pathological seed): make one.
            let district = DISTRICTS[0];
            let mother = b.person("female", LAST_NAMES[0], 30, district);
            let child = b.child(mother, None, 1, district);
            households.push(Household {
                id: format!("HH-{:05}", households.len() + 1),
                national_id: b.persons[mother].national_id.clone(),
                member_ids: vec![b.persons[mother].national_id.clone(), b.persons[child].national_id.clone()],
                district: district.to_string(),
                household_size: 2,
                monthly_income: 150,
                programmes: Vec::new(),
            });
            (households.len() - 1, mother)
        }
    };
    if let Some(hh) = households.get_mut(household) {
        if !hh.programmes.iter().any(|p| p == "maternal-support") {
            hh.programmes.push("maternal-support".to_string());
        }
    }
    let mother_id = b.persons[mother].national_id.clone();
    let mother_birth = b.births.iter().position(|br| br.mother_id == mother_id).unwrap_or(0);

    let deceased = match b.persons.iter().position(|p| p.deceased) {
        Some(i) => i,
        None => {
            let eldest = (0..b.persons.len())
                .filter(|&i| i != mother)
                .max_by_key(|&i| b.persons[i].age())
                .unwrap_or(0);
            if let Some(p) = b.persons.get_mut(eldest) {
                p.deceased = true;
            }
            eldest
        }
    };

    if farmers.len() < 2 {
        for i in 0..b.persons.len() {
            if farmers.len() >= 2 {
                break;
            }
            let p = &b.persons[i];
            if p.deceased || p.age() < 18 || farmers.iter().any(|f| f.national_id == p.national_id) {
                continue;
            }
            farmers.push(Farmer {
                id: format!("FR-{:05}", farmers.len() + 1),
                national_id: p.national_id.clone(),
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                district: p.district.clone(),
                farm_size_ha: 1.5,
                main_crop: CROPS[0].to_string(),
                bank_account: None,
                household_size: 1,
                annual_income: 1200,
                damage_level: "moderate".to_string(),
            });
        }
    }
    let farmer_with_account = match farmers.iter().position(|f| f.bank_account.is_some()) {
        Some(i) => i,
        None => {
            if let Some(f) = farmers.first_mut() {
                f.bank_account = Some(format!("{:012}", b.rng.below(1_000_000_000_000)));
            }
            0
        }
    };
    let farmer_without_account = match farmers.iter().position(|f| f.bank_account.is_none()) {
        Some(i) => i,
        None => {
            let i = usize::from(farmer_with_account == 0);
            if let Some(f) = farmers.get_mut(i) {
                f.bank_account = None;
            }
            i
        }
    };

    Roles { verified_mother: mother, mother_birth, deceased, farmer_with_account, farmer_without_account }
}

fn age_at(birth: NaiveDate, today: NaiveDate) -> i32 {
    let mut age = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// The Luhn check digit of a string of ASCII digits.
fn luhn_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Whether `id` is 10 ASCII digits with a valid Luhn check digit.
pub fn is_well_formed_national_id(id: &str) -> bool {
    id.len() == 10
        && id.bytes().all(|c| c.is_ascii_digit())
        && id
            .get(..9)
            .zip(id.get(9..))
            .is_some_and(|(body, check)| check.parse::<u32>().ok() == Some(luhn_digit(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_value() {
        // 7992739871 is the textbook Luhn example with check digit 3.
        assert_eq!(luhn_digit("7992739871"), 3);
        assert!(is_well_formed_national_id(&format!("799273987{}", luhn_digit("799273987"))));
    }

    #[test]
    fn roles_hold_for_many_seeds() {
        for seed in 0..40 {
            let data = SeedData::generate(seed);
            let mother = data.verified_mother();
            assert_eq!(mother.gender, "female");
            assert!(!mother.deceased && (18..=45).contains(&mother.age()), "seed {seed}");
            let hh = data.household_of(&mother.national_id).expect("household");
            assert!(hh.programmes.iter().any(|p| p == "maternal-support"));
            let (m, birth) = data.registered_birth();
            assert_eq!(birth.mother_id, m.national_id);
            assert!(data.deceased_person().deceased);
            assert!(data.farmer_with_bank_account().bank_account.is_some());
            assert!(data.farmer_without_bank_account().bank_account.is_none());
            for id in data.unknown_national_ids() {
                assert!(data.person(id).is_none());
                assert!(is_well_formed_national_id(id));
            }
            assert!(data.persons().iter().all(|p| is_well_formed_national_id(&p.national_id)));
        }
    }
}
