-- Names sort as a reader expects, not by bytes: "Adán" before "Adrienne", "Émile" among the E's.
-- The column's collation is the ICU root collation (language-neutral, for names from many
-- languages), so station assignment and the printed lists, which both order by voter_name,
-- agree without saying so in every query.
ALTER TABLE voter ALTER COLUMN voter_name TYPE text COLLATE "und-x-icu";
