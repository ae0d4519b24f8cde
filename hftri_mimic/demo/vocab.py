"""Code lists the demo draws from: ICD diagnoses, lab items, drugs (real MIMIC-IV codes and labels)."""

from __future__ import annotations

# Heart-failure codes written for HF admissions (all in the strict list of docs/CURATION.md, Labels).
HF_CODES = {
    9: [
        ("4280", "Congestive heart failure, unspecified"),
        ("42822", "Chronic systolic heart failure"),
        ("42832", "Chronic diastolic heart failure"),
        ("42833", "Acute on chronic diastolic heart failure"),
        ("40291", "Unspecified hypertensive heart disease with heart failure"),
        ("40491", "Hypertensive heart and chronic kidney disease, unspecified, with heart failure"),
    ],
    10: [
        ("I5022", "Chronic systolic (congestive) heart failure"),
        ("I5032", "Chronic diastolic (congestive) heart failure"),
        ("I509", "Heart failure, unspecified"),
        ("I5043", "Acute on chronic combined systolic and diastolic heart failure"),
        ("I110", "Hypertensive heart disease with heart failure"),
        (
            "I130",
            "Hypertensive heart and chronic kidney disease with heart failure and stage 1 through stage 4 "
            "chronic kidney disease, or unspecified chronic kidney disease",
        ),
    ],
}
# Codes in Charlson's CHF list but not in the strict list: they make the two definitions differ.
CHARLSON_ONLY_CODES = {
    9: [("4254", "Other primary cardiomyopathies"), ("39891", "Rheumatic heart failure (congestive)")],
    10: [("I255", "Ischemic cardiomyopathy"), ("I420", "Dilated cardiomyopathy")],
}
# Chronic conditions (medical-history groups of docs/CURATION.md, Dataset): (group, icd9, icd10, base rate, HF weight).
HISTORY = [
    (
        "hypertension",
        ("4019", "Unspecified essential hypertension"),
        ("I10", "Essential (primary) hypertension"),
        0.45,
        0.15,
    ),
    (
        "diabetes",
        (
            "25000",
            "Diabetes mellitus without mention of complication, type II or unspecified type, "
            "not stated as uncontrolled",
        ),
        ("E119", "Type 2 diabetes mellitus without complications"),
        0.25,
        0.1,
    ),
    (
        "hyperlipidemia",
        ("2724", "Other and unspecified hyperlipidemia"),
        ("E785", "Hyperlipidemia, unspecified"),
        0.35,
        0.05,
    ),
    (
        "coronary_disease",
        ("41401", "Coronary atherosclerosis of native coronary artery"),
        ("I2510", "Atherosclerotic heart disease of native coronary artery without angina pectoris"),
        0.2,
        0.15,
    ),
    ("atrial_fibrillation", ("42731", "Atrial fibrillation"), ("I480", "Paroxysmal atrial fibrillation"), 0.12, 0.15),
    (
        "ckd",
        ("5853", "Chronic kidney disease, Stage III (moderate)"),
        ("N183", "Chronic kidney disease, stage 3 (moderate)"),
        0.1,
        0.1,
    ),
    (
        "stroke",
        ("43491", "Cerebral artery occlusion, unspecified with cerebral infarction"),
        ("I639", "Cerebral infarction, unspecified"),
        0.04,
        0.02,
    ),
    (
        "copd",
        ("496", "Chronic airway obstruction, not elsewhere classified"),
        ("J449", "Chronic obstructive pulmonary disease, unspecified"),
        0.08,
        0.04,
    ),
]
FILLER = {
    9: [
        ("5990", "Urinary tract infection, site not specified"),
        ("2859", "Anemia, unspecified"),
        ("53081", "Esophageal reflux"),
        ("3051", "Tobacco use disorder"),
        ("2449", "Unspecified acquired hypothyroidism"),
        ("311", "Depressive disorder, not elsewhere classified"),
        ("V5861", "Long-term (current) use of anticoagulants"),
        ("2768", "Hypopotassemia"),
        ("2761", "Hyposmolality and/or hyponatremia"),
        ("486", "Pneumonia, organism unspecified"),
        ("5849", "Acute kidney failure, unspecified"),
        ("V1582", "Personal history of tobacco use"),
        ("78659", "Other chest pain"),
        ("7802", "Syncope and collapse"),
        ("27800", "Obesity, unspecified"),
        ("3004", "Dysthymic disorder"),
        ("V4582", "Percutaneous transluminal coronary angioplasty status"),
        ("4241", "Aortic valve disorders"),
        ("0389", "Unspecified septicemia"),
        ("E8497", "Accidents occurring in residential institution"),
    ],
    10: [
        ("N390", "Urinary tract infection, site not specified"),
        ("D649", "Anemia, unspecified"),
        ("K219", "Gastro-esophageal reflux disease without esophagitis"),
        ("F17210", "Nicotine dependence, cigarettes, uncomplicated"),
        ("E039", "Hypothyroidism, unspecified"),
        ("F329", "Major depressive disorder, single episode, unspecified"),
        ("Z7901", "Long term (current) use of anticoagulants"),
        ("E876", "Hypokalemia"),
        ("E871", "Hypo-osmolality and hyponatremia"),
        ("J189", "Pneumonia, unspecified organism"),
        ("N179", "Acute kidney failure, unspecified"),
        ("Z87891", "Personal history of nicotine dependence"),
        ("R079", "Chest pain, unspecified"),
        ("R55", "Syncope and collapse"),
        ("E669", "Obesity, unspecified"),
        ("G4733", "Obstructive sleep apnea (adult) (pediatric)"),
        ("Z955", "Presence of coronary angioplasty implant and graft"),
        ("I350", "Nonrheumatic aortic (valve) stenosis"),
        ("A419", "Sepsis, unspecified organism"),
        ("Y92239", "Unspecified place in hospital as the place of occurrence of the external cause"),
    ],
}

# Lab items: itemid -> (label, fluid, category, uom, mean, sd, ref_lower, ref_upper, decimals, c_lab weight).
# The weight says how much the patient's lab component shifts the value, in sd units (the planted signal).
LAB_ITEMS = {
    50868: ("Anion Gap", "Blood", "Chemistry", "mEq/L", 14.0, 3.0, 8.0, 20.0, 0, 0.0),
    50882: ("Bicarbonate", "Blood", "Chemistry", "mEq/L", 25.0, 3.5, 22.0, 32.0, 0, -0.1),
    50912: ("Creatinine", "Blood", "Chemistry", "mg/dL", 1.1, 0.35, 0.4, 1.2, 1, 0.5),
    50971: ("Potassium", "Blood", "Chemistry", "mEq/L", 4.2, 0.45, 3.3, 5.4, 1, 0.1),
    50983: ("Sodium", "Blood", "Chemistry", "mEq/L", 138.5, 3.5, 133.0, 147.0, 0, -0.35),
    50902: ("Chloride", "Blood", "Chemistry", "mEq/L", 102.0, 4.0, 96.0, 108.0, 0, -0.1),
    50931: ("Glucose", "Blood", "Chemistry", "mg/dL", 125.0, 35.0, 70.0, 100.0, 0, 0.05),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 20.0, 8.0, 6.0, 20.0, 0, 0.45),
    50893: ("Calcium, Total", "Blood", "Chemistry", "mg/dL", 8.9, 0.5, 8.4, 10.3, 1, 0.0),
    50960: ("Magnesium", "Blood", "Chemistry", "mg/dL", 2.0, 0.25, 1.6, 2.6, 1, 0.0),
    50970: ("Phosphate", "Blood", "Chemistry", "mg/dL", 3.5, 0.6, 2.7, 4.5, 1, 0.05),
    51222: ("Hemoglobin", "Blood", "Hematology", "g/dL", 11.8, 1.8, 13.7, 17.5, 1, -0.3),
    51221: ("Hematocrit", "Blood", "Hematology", "%", 35.5, 5.0, 40.0, 51.0, 1, -0.3),
    51265: ("Platelet Count", "Blood", "Hematology", "K/uL", 230.0, 70.0, 150.0, 440.0, 0, 0.0),
    51301: ("White Blood Cells", "Blood", "Hematology", "K/uL", 8.5, 3.0, 4.0, 11.0, 1, 0.05),
    51277: ("RDW", "Blood", "Hematology", "%", 14.2, 1.5, 10.5, 15.5, 1, 0.35),
    # NT-proBNP is log-normal: mean/sd are on log(pg/mL).
    50963: ("NTproBNP", "Blood", "Chemistry", "pg/mL", 6.2, 1.1, 0.0, 852.0, 0, 0.8),
    # Troponin T: log-normal on log(ng/mL); below 0.01 it is reported as "<0.01" with no valuenum.
    51003: ("Troponin T", "Blood", "Chemistry", "ng/mL", -3.6, 1.2, 0.0, 0.01, 2, 0.3),
}
LOG_NORMAL_ITEMS = {50963, 51003}
CHEM_PANEL = [50868, 50882, 50912, 50971, 50983, 50902, 50931, 51006, 50893, 50960, 50970]
CBC_PANEL = [51222, 51221, 51265, 51301, 51277]
# Items outside the configured set, so that some admissions have labs but none of the cohort's items.
OTHER_ITEMS = {
    51279: ("Red Blood Cells", "Blood", "Hematology", "m/uL", 4.0, 0.6, 4.6, 6.1, 2, 0.0),
    51237: ("INR(PT)", "Blood", "Hematology", None, 1.3, 0.4, 0.9, 1.1, 1, 0.0),
    50820: ("pH", "Blood", "Blood Gas", "units", 7.39, 0.05, 7.35, 7.45, 2, 0.0),
    51250: ("MCV", "Blood", "Hematology", "fL", 90.0, 6.0, 80.0, 100.0, 0, 0.0),
}
EXTRA_D_LABITEMS = [
    (50808, "Free Calcium", "Blood", "Blood Gas"),
    (50826, "Tidal Volume", "Blood", "Blood Gas"),
    (51003, "Troponin T", "Blood", "Chemistry"),
    (52642, "Troponin I", "Blood", "Chemistry"),
    (50861, "Alanine Aminotransferase (ALT)", "Blood", "Chemistry"),
    (50885, "Bilirubin, Total", "Blood", "Chemistry"),
]

# Drugs: (drug name, formulary code, gsn, ndc, prod_strength, dose, unit, form_disp, route, class, HF weight).
DRUGS = [
    ("Aspirin", "ASA81", "004380", "63739052210", "81mg Tablet", "81", "mg", "TAB", "PO", "antiplatelet", 0.2),
    ("Clopidogrel", "CLOP75", "045617", "60505025303", "75 mg Tablet", "75", "mg", "TAB", "PO", "antiplatelet", 0.1),
    (
        "Heparin",
        "HEPA5I",
        "006549",
        "63323026201",
        "5000 Units / mL- 1mL Vial",
        "5000",
        "UNIT",
        "mL",
        "SC",
        "anticoagulant",
        0.1,
    ),
    ("Warfarin", "WARF1", "025786", "51079081120", "1mg Tablet", "1", "mg", "TAB", "PO", "anticoagulant", 0.15),
    ("Apixaban", "APIX5", "066924", "00003089421", "5 mg Tablet", "5", "mg", "TAB", "PO", "anticoagulant", 0.15),
    (
        "Metoprolol Tartrate",
        "METO25",
        "004847",
        "51079025520",
        "25mg Tablet",
        "25",
        "mg",
        "TAB",
        "PO/NG",
        "beta_blocker",
        0.3,
    ),
    (
        "Carvedilol",
        "CARV6.25",
        "020211",
        "68084025211",
        "6.25mg Tablet",
        "6.25",
        "mg",
        "TAB",
        "PO",
        "beta_blocker",
        0.35,
    ),
    ("Lisinopril", "LISI5", "000388", "00172375960", "5 mg Tablet", "5", "mg", "TAB", "PO", "ace_inhibitor", 0.2),
    ("Losartan Potassium", "LOSA25", "021713", "00093736556", "25mg Tablet", "25", "mg", "TAB", "PO", "arb", 0.15),
    ("Furosemide", "FURO40I", "008208", "00409610202", "40mg/4mL Vial", "40", "mg", "VIAL", "IV", "diuretic", 0.45),
    ("Spironolactone", "SPIR25", "008206", "00378002101", "25mg Tablet", "25", "mg", "TAB", "PO", "diuretic", 0.2),
    ("Atorvastatin", "ATOR40", "029968", "00071015623", "40mg Tablet", "40", "mg", "TAB", "PO", "statin", 0.1),
    ("Simvastatin", "SIMV20", "016579", "00006073554", "20mg Tablet", "20", "mg", "TAB", "PO", "statin", 0.05),
    (
        "Insulin",
        "GLAR100I",
        "062781",
        "00088222033",
        "100 Units / mL - 10 mL Vial",
        "0-10",
        "UNIT",
        "mL",
        "SC",
        "other",
        0.05,
    ),
    ("Acetaminophen", "ACET325", "004489", "51079000220", "325mg Tablet", "650", "mg", "TAB", "PO/NG", "other", 0.0),
    (
        "Sodium Chloride 0.9%  Flush",
        "NACLFLUSH",
        "",
        "00000000000",
        "10 mL Syringe",
        "3",
        "mL",
        "mL",
        "IV",
        "other",
        0.0,
    ),
    ("Docusate Sodium", "DOCU100", "002634", "00904224461", "100mg Capsule", "100", "mg", "CAP", "PO", "other", 0.0),
    ("Senna", "SENN187", "066200", "00904516561", "8.6 mg Tablet", "1", "TAB", "TAB", "PO", "other", 0.0),
    ("Pantoprazole", "PANT40", "027462", "00008084199", "40mg Tablet", "40", "mg", "TAB", "PO", "other", 0.0),
    (
        "Potassium Chloride",
        "KCL20PM",
        "001255",
        "00338070341",
        "20mEq/50mL Premix",
        "20",
        "mEq",
        "BAG",
        "IV",
        "other",
        0.05,
    ),
]
