//! Which column of a delimited file holds what, from the header names.
//!
//! Names are compared without case, spaces or punctuation (`Lcl Date` is `lcldate`,
//! `vehicle_id` is `vehicleid`), and a unit in brackets (`speed (km/h)`, `ele[m]`) is taken off
//! the name and kept. Each role has a list of known names, best first; the first column that
//! matches a name wins. Lists, in short:
//!
//! | role | names |
//! | --- | --- |
//! | latitude | `lat`, `latitude`, `LAT`, ...; `y` with `x` |
//! | longitude | `lon`, `lng`, `long`, `longitude`, ...; `x` with `y` |
//! | hemisphere | `N/S`, `E/W` |
//! | time | `time`, `timestamp`, `datetime`, `BaseDateTime`, `RecordedAtTime`, `utc`, ... |
//! | date + time | `date` and `time`, `Lcl Date` and `Lcl Time`, ... |
//! | UTC offset | `UTCOfst`, `utc_offset`, `tz`, ... (for naive local times) |
//! | altitude | `altitude`, `alt`, `ele`, `elevation`, `height`, `AltMSL`, `AltGPS`, ... |
//! | speed | `speed`, `SOG` (knots), `GndSpd`, `speed_kmh` (km/h), ... |
//! | heading | `heading`, `hdg`, `bearing`, `course`, `COG`, `TRK`, ... |
//! | accuracy | `accuracy`, `hacc`, ...; else `hdop` × [`crate::HDOP_TO_METRES`] |
//! | vehicle | `MMSI`, `VehicleRef`, `vehicle_id`, `device`, `imei`, ...; `id` if values repeat |

/// A column and the unit its header or the units row gives, if any.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Col {
    pub(crate) index: usize,
    pub(crate) unit: String,
}

/// The roles found in a header.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Columns {
    pub(crate) lat: Option<Col>,
    pub(crate) lon: Option<Col>,
    pub(crate) north_south: Option<usize>,
    pub(crate) east_west: Option<usize>,
    /// A full date and time (or epoch number).
    pub(crate) time: Option<usize>,
    /// A date column and a time-of-day column, used together.
    pub(crate) date: Option<usize>,
    pub(crate) time_of_day: Option<usize>,
    pub(crate) offset: Option<usize>,
    pub(crate) altitude: Option<Col>,
    pub(crate) speed: Option<Col>,
    pub(crate) heading: Option<Col>,
    pub(crate) accuracy: Option<Col>,
    pub(crate) hdop: Option<usize>,
    pub(crate) vehicle: Option<usize>,
    /// The vehicle column is a bare `id`, which may be a row id instead.
    pub(crate) vehicle_is_bare_id: bool,
    /// An AIS export (has an MMSI column): 511 heading, 360 course, 102.3 knots mean "none".
    pub(crate) ais: bool,
}

const LAT: &[&str] = &[
    "lat",
    "latitude",
    "latitudedeg",
    "latdeg",
    "latitudedegrees",
    "gpslat",
    "gpslatitude",
    "positionlat",
    "latitudedecimal",
    "latdd",
];
const LON: &[&str] = &[
    "lon",
    "lng",
    "long",
    "longitude",
    "longitudedeg",
    "londeg",
    "lngdeg",
    "longitudedegrees",
    "gpslon",
    "gpslng",
    "gpslong",
    "gpslongitude",
    "positionlon",
    "positionlong",
    "longitudedecimal",
    "londd",
];
const NORTH_SOUTH: &[&str] = &[
    "ns",
    "nshemisphere",
    "latref",
    "latitudehemisphere",
    "nsind",
];
const EAST_WEST: &[&str] = &[
    "ew",
    "ewhemisphere",
    "lonref",
    "longitudehemisphere",
    "ewind",
];
const TIME: &[&str] = &[
    "time",
    "timestamp",
    "datetime",
    "basedatetime",
    "recordedattime",
    "utc",
    "utctime",
    "datetimeutc",
    "utcdatetime",
    "timestamputc",
    "timeutc",
    "gpstime",
    "trackedat",
    "recordedat",
    "fixtime",
    "isotime",
    "unixtime",
    "epoch",
    "epochtime",
    "ts",
    "localtime",
    "lcltime",
];
const DATE: &[&str] = &[
    "date",
    "utcdate",
    "gpsdate",
    "lcldate",
    "localdate",
    "dateutc",
];
const TIME_OF_DAY: &[&str] = &[
    "time",
    "utctime",
    "timeutc",
    "gpstime",
    "lcltime",
    "localtime",
    "timelocal",
    "timeofday",
];
const OFFSET: &[&str] = &[
    "utcofst",
    "utcoffset",
    "utcoff",
    "tzoffset",
    "timezoneoffset",
    "gmtoffset",
    "offset",
    "tz",
    "timezone",
];
/// Names with the unit they imply ("" for none).
const ALTITUDE: &[(&str, &str)] = &[
    ("altitude", ""),
    ("alt", ""),
    ("ele", ""),
    ("elevation", ""),
    ("height", ""),
    ("altmsl", ""),
    ("altgps", ""),
    ("gpsaltitude", ""),
    ("altitudem", "m"),
    ("elevationm", "m"),
    ("heightm", "m"),
    ("altitudemeters", "m"),
    ("altitudeft", "ft"),
    ("altitudefeet", "ft"),
    ("altft", "ft"),
    ("elevationft", "ft"),
];
const SPEED: &[(&str, &str)] = &[
    ("speed", ""),
    ("spd", ""),
    ("sog", "kn"),
    ("gndspd", ""),
    ("groundspeed", ""),
    ("speedoverground", ""),
    ("gpsspeed", ""),
    ("velocity", ""),
    ("speedms", "m/s"),
    ("speedmps", "m/s"),
    ("speedkmh", "km/h"),
    ("speedkph", "km/h"),
    ("speedkmph", "km/h"),
    ("speedkn", "kn"),
    ("speedkt", "kn"),
    ("speedkts", "kn"),
    ("speedknots", "kn"),
    ("speedmph", "mph"),
];
const HEADING: &[&str] = &[
    "heading",
    "hdg",
    "headingdeg",
    "bearing",
    "course",
    "cog",
    "courseoverground",
    "truecourse",
    "trk",
    "azimuth",
];
const ACCURACY: &[&str] = &[
    "accuracy",
    "acc",
    "hacc",
    "horizontalaccuracy",
    "haccuracy",
    "accuracym",
    "gpsaccuracy",
    "eph",
    "hpe",
    "horizontalerror",
];
const VEHICLE: &[&str] = &[
    "mmsi",
    "vehicleref",
    "vehicleid",
    "vehicle",
    "vehiclenumber",
    "deviceid",
    "device",
    "imei",
    "unitid",
    "trackerid",
    "assetid",
    "busid",
    "id",
];

/// A header name split into its comparable form and a unit in brackets.
fn normalise(name: &str) -> (String, String) {
    let (base, unit) = match name.find(['(', '[']) {
        Some(open) => {
            let unit = name[open + 1..].trim_end_matches([')', ']', ' ']);
            (&name[..open], unit.trim())
        }
        None => (name, ""),
    };
    let base = base
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (base, unit.to_string())
}

/// Maps a header (and a units row, when the file has one) to roles.
pub(crate) fn map(header: &[String], units: Option<&[String]>) -> Columns {
    let names: Vec<(String, String)> = header.iter().map(|h| normalise(h)).collect();
    let unit_of = |index: usize, implied: &str| -> String {
        let from_header = &names[index].1;
        let from_row = units
            .and_then(|u| u.get(index))
            .map(|u| u.trim())
            .unwrap_or("");
        [from_header.as_str(), from_row, implied]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or("")
            .to_string()
    };
    let find = |candidates: &[&str]| {
        candidates
            .iter()
            .find_map(|c| names.iter().position(|(n, _)| n == c))
    };
    let find_with_unit = |candidates: &[(&str, &str)]| {
        candidates.iter().find_map(|(c, implied)| {
            let index = names.iter().position(|(n, _)| n == c)?;
            Some(Col {
                index,
                unit: unit_of(index, implied),
            })
        })
    };
    let plain = |index: usize| Col {
        index,
        unit: unit_of(index, ""),
    };

    let mut cols = Columns::default();
    match (find(LAT), find(LON)) {
        (Some(lat), Some(lon)) => (cols.lat, cols.lon) = (Some(plain(lat)), Some(plain(lon))),
        _ => {
            if let (Some(y), Some(x)) = (find(&["y"]), find(&["x"])) {
                (cols.lat, cols.lon) = (Some(plain(y)), Some(plain(x)));
            }
        }
    }
    cols.north_south = find(NORTH_SOUTH);
    cols.east_west = find(EAST_WEST);
    cols.date = find(DATE);
    cols.time_of_day = cols.date.and_then(|_| find(TIME_OF_DAY));
    if cols.time_of_day.is_none() {
        cols.date = None;
        cols.time = find(TIME);
    }
    cols.offset = find(OFFSET);
    cols.altitude = find_with_unit(ALTITUDE);
    cols.speed = find_with_unit(SPEED);
    cols.heading = find(HEADING).map(plain);
    cols.accuracy = find(ACCURACY).map(plain);
    cols.hdop = find(&["hdop"]);
    cols.vehicle = find(VEHICLE);
    cols.vehicle_is_bare_id = cols.vehicle.is_some_and(|i| names[i].0 == "id");
    cols.ais = find(&["mmsi"]).is_some();

    // BT747 / iBlue exports (INDEX, RCR, ... SPEED) give the speed in km/h without saying so.
    let bt747 = find(&["rcr"]).is_some() && find(&["index"]).is_some();
    if let Some(speed) = cols.speed.as_mut().filter(|s| bt747 && s.unit.is_empty()) {
        speed.unit = "km/h".to_string();
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bus_header() {
        let h = strings(&[
            "id",
            "vehicle_id",
            "trip_id",
            "timestamp",
            "latitude",
            "longitude",
        ]);
        let c = map(&h, None);
        assert_eq!(
            (c.lat.map(|c| c.index), c.lon.map(|c| c.index)),
            (Some(4), Some(5))
        );
        assert_eq!(
            (c.time, c.vehicle, c.vehicle_is_bare_id),
            (Some(3), Some(1), false)
        );
    }

    #[test]
    fn split_date_time_with_units_row() {
        let h = strings(&[
            "Lcl Date",
            "Lcl Time",
            "UTCOfst",
            "Latitude",
            "Longitude",
            "AltMSL",
        ]);
        let u = strings(&[
            "yyy-mm-dd",
            "hh:mm:ss",
            "hh:mm",
            "degrees",
            "degrees",
            "ft msl",
        ]);
        let c = map(&h, Some(&u));
        assert_eq!(
            (c.date, c.time_of_day, c.offset, c.time),
            (Some(0), Some(1), Some(2), None)
        );
        assert_eq!(c.altitude.map(|a| a.unit), Some("ft msl".to_string()));
    }

    #[test]
    fn units_in_names_and_brackets() {
        let h = strings(&["Y", "X", "Speed (km/h)", "SOG", "ele[ft]"]);
        let c = map(&h, None);
        assert_eq!(c.lat.map(|c| c.index), Some(0));
        assert_eq!(c.speed.map(|s| s.unit), Some("km/h".to_string()));
        assert_eq!(c.altitude.map(|s| s.unit), Some("ft".to_string()));
        let bt747 = map(
            &strings(&["INDEX", "RCR", "LATITUDE", "LONGITUDE", "SPEED"]),
            None,
        );
        assert_eq!(bt747.speed.map(|s| s.unit), Some("km/h".to_string()));
        let ais = map(&strings(&["LAT", "LON", "MMSI", "SOG", "Heading"]), None);
        assert!(ais.ais);
        assert_eq!(ais.speed.map(|s| s.unit), Some("kn".to_string()));
    }

    #[test]
    fn no_position_columns() {
        let c = map(&strings(&["a", "b", "lateral"]), None);
        assert_eq!((c.lat, c.lon), (None, None));
    }
}
