import java.sql.*;
public class JdbcMeta {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/nodedb?user=nodedb";
        try (Connection c = DriverManager.getConnection(url)) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());
            try (ResultSet rs = md.getTables(null, "public", "%", new String[]{"TABLE"})) {
                while (rs.next()) System.out.println("table " + rs.getString("TABLE_NAME") + " " + rs.getString("TABLE_TYPE"));
            }
            try (ResultSet rs = md.getColumns(null, "public", "users", "%")) {
                while (rs.next()) System.out.println("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " " + rs.getInt("DATA_TYPE"));
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "users")) {
                while (rs.next()) System.out.println("pk " + rs.getString("COLUMN_NAME") + " " + rs.getString("PK_NAME"));
            }
            try (ResultSet rs = md.getIndexInfo(null, "public", "users", false, false)) {
                while (rs.next()) System.out.println("index " + rs.getString("INDEX_NAME") + " " + rs.getString("COLUMN_NAME") + " " + rs.getBoolean("NON_UNIQUE"));
            }
            try (ResultSet rs = md.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) System.out.println("tcolumn " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " " + rs.getInt("NULLABLE") + " " + rs.getString("COLUMN_DEF"));
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("INSERT INTO users (id, name) VALUES ('j1', 'Jay')");
                Savepoint sp = c.setSavepoint("s1");
                st.execute("INSERT INTO users (id, name) VALUES ('j2', 'Kay')");
                c.rollback(sp);
                c.commit();
                try (ResultSet rs = st.executeQuery("SELECT id FROM users WHERE id LIKE 'j%' ORDER BY id")) {
                    while (rs.next()) System.out.println("row " + rs.getString(1));
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT name FROM users WHERE age > ? ORDER BY name")) {
                ps.setLong(1, 26);
                try (ResultSet rs = ps.executeQuery()) { while (rs.next()) System.out.println("older " + rs.getString(1)); }
            }
        }
    }
}
